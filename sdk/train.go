package sdk

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/knctl/knctl/sdk/pb"
)

// TrainRequest trains a loaded model on examples, starting from its current
// weights (load with init=random to train from scratch), with AdamW and a
// linear warm-up then linear decay of the learning rate.
//
// The objective is the model's own: a causal model learns every next token
// of prompt+answer; a masked model learns the answer's pieces at the mask
// slot, plus MaskRate of the other tokens masked at random.
type TrainRequest struct {
	Examples       []Query `json:"examples"`
	Steps          int     `json:"steps"`
	BatchSize      int     `json:"batch_size"`
	LearningRate   float64 `json:"learning_rate"`
	WeightDecay    float64 `json:"weight_decay"`
	WarmupSteps    int     `json:"warmup_steps"`
	LabelSmoothing float64 `json:"label_smoothing"`
	Seed           int64   `json:"seed"`
	// MaskRate is the share of non-answer tokens a masked model also masks.
	MaskRate float64 `json:"mask_rate"`
	// EvalEvery evaluates the answer probability on EvalExamples (default:
	// Examples) every so many steps; 0 only at the end.
	EvalEvery    int     `json:"eval_every"`
	EvalExamples []Query `json:"eval_examples,omitempty"`
	// TargetProb stops training early once the evaluated mean answer
	// probability reaches it (0: never), to keep confidence realistic.
	TargetProb float64 `json:"target_prob"`
}

// TrainProgress reports training. Evaluated marks reports that carry
// MeanAnswerProb and Accuracy (top-1 of the answer's first token).
type TrainProgress struct {
	Step           int     `json:"step"`
	Steps          int     `json:"steps"`
	Loss           float64 `json:"loss"`
	Evaluated      bool    `json:"evaluated"`
	MeanAnswerProb float64 `json:"mean_answer_prob"`
	Accuracy       float64 `json:"accuracy"`
	Seconds        float64 `json:"seconds"`
	Done           bool    `json:"done"`
	// Stopped says why training ended early ("" when it ran all steps).
	Stopped string `json:"stopped,omitempty"`
}

// Trainer is implemented by models that can be trained.
type Trainer interface {
	// Train runs the request, calling progress as it goes, and returns the
	// final report.
	Train(ctx context.Context, req TrainRequest, progress func(TrainProgress)) (TrainProgress, error)
}

// ErrNoTraining is returned by a model plugin that cannot train.
var ErrNoTraining = errors.New("the model plugin does not support training")

func (s *modelServer) Train(req *pb.TrainRequest, stream pb.Model_TrainServer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.get()
	if err != nil {
		return toStatus(err)
	}
	tr, ok := m.(Trainer)
	if lm, locked := m.(*lockedModel); locked {
		_, ok = lm.m.(Trainer)
	}
	if !ok {
		return status.Error(codes.Unimplemented, ErrNoTraining.Error())
	}
	r := TrainRequest{
		Steps: int(req.Steps), BatchSize: int(req.BatchSize), LearningRate: req.LearningRate,
		WeightDecay: req.WeightDecay, WarmupSteps: int(req.WarmupSteps), LabelSmoothing: req.LabelSmoothing,
		Seed: req.Seed, MaskRate: req.MaskRate, EvalEvery: int(req.EvalEvery), TargetProb: req.TargetProb,
	}
	for _, q := range req.Examples {
		r.Examples = append(r.Examples, queryFromPB(q))
	}
	for _, q := range req.EvalExamples {
		r.EvalExamples = append(r.EvalExamples, queryFromPB(q))
	}
	var sendErr error
	final, err := tr.Train(stream.Context(), r, func(p TrainProgress) {
		if sendErr == nil {
			sendErr = stream.Send(progressToPB(p))
		}
	})
	if err != nil {
		return toStatus(err)
	}
	if sendErr != nil {
		return sendErr
	}
	final.Done = true
	return stream.Send(progressToPB(final))
}

// Train implements Trainer: it fails with ErrNoTraining when the plugin
// cannot train.
func (c *ModelClient) Train(ctx context.Context, req TrainRequest, progress func(TrainProgress)) (TrainProgress, error) {
	r := &pb.TrainRequest{
		Steps: int32(req.Steps), BatchSize: int32(req.BatchSize), LearningRate: req.LearningRate,
		WeightDecay: req.WeightDecay, WarmupSteps: int32(req.WarmupSteps), LabelSmoothing: req.LabelSmoothing,
		Seed: req.Seed, MaskRate: req.MaskRate, EvalEvery: int32(req.EvalEvery), TargetProb: req.TargetProb,
	}
	for _, q := range req.Examples {
		r.Examples = append(r.Examples, queryToPB(q))
	}
	for _, q := range req.EvalExamples {
		r.EvalExamples = append(r.EvalExamples, queryToPB(q))
	}
	stream, err := c.c.Train(ctx, r)
	if err != nil {
		return TrainProgress{}, trainErr(err)
	}
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return TrainProgress{}, errors.New("training ended without a final report")
		}
		if err != nil {
			return TrainProgress{}, trainErr(err)
		}
		p := progressFromPB(msg)
		if p.Done {
			return p, nil
		}
		if progress != nil {
			progress(p)
		}
	}
}

func trainErr(err error) error {
	if status.Code(err) == codes.Unimplemented {
		return ErrNoTraining
	}
	return fromStatus(err)
}

func progressToPB(p TrainProgress) *pb.TrainProgress {
	return &pb.TrainProgress{
		Step: int32(p.Step), Steps: int32(p.Steps), Loss: p.Loss, Evaluated: p.Evaluated,
		MeanAnswerProb: p.MeanAnswerProb, Accuracy: p.Accuracy, Seconds: p.Seconds, Done: p.Done, Stopped: p.Stopped,
	}
}

func progressFromPB(p *pb.TrainProgress) TrainProgress {
	return TrainProgress{
		Step: int(p.Step), Steps: int(p.Steps), Loss: p.Loss, Evaluated: p.Evaluated,
		MeanAnswerProb: p.MeanAnswerProb, Accuracy: p.Accuracy, Seconds: p.Seconds, Done: p.Done, Stopped: p.Stopped,
	}
}
