package gpt2

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"

	"github.com/sugarme/gotch/ts"

	"github.com/knctl/knctl/plugins/models/torch"
	"github.com/knctl/knctl/sdk"
)

var _ sdk.Trainer = (*Model)(nil)

// evalBatchSize is how many evaluation examples share one forward pass; with
// no graph kept it only bounds the size of the logits.
const evalBatchSize = 128

// Train implements sdk.Trainer: causal language modelling of every next
// token of prompt+answer (the first token is only context), with label
// smoothing as torch's CrossEntropyLoss applies it, through
// torch.RunTraining (AdamW, warm-up then linear decay, clipping at global
// norm 1, batches of examples of equal length so no padding or key mask
// is needed). MaskRate is a masked model's setting and is ignored. The
// evaluation is Predict's: the teacher-forced joint probability of the
// answer, and whether its first token is the top-1 prediction. On success
// the model holds the trained weights; on error or cancellation it keeps
// its weights bit for bit. Training refuses to start while noise is
// applied or value-slot edits can be undone.
func (m *Model) Train(ctx context.Context, req sdk.TrainRequest, progress func(sdk.TrainProgress)) (sdk.TrainProgress, error) {
	if err := torch.CheckTrainRequest(req); err != nil {
		return sdk.TrainProgress{}, err
	}
	train, err := m.encodeExamples("examples", req.Examples)
	if err != nil {
		return sdk.TrainProgress{}, err
	}
	eval := train
	if len(req.EvalExamples) > 0 {
		if eval, err = m.encodeExamples("eval_examples", req.EvalExamples); err != nil {
			return sdk.TrainProgress{}, err
		}
	}
	lengths := make([]int, len(train))
	for i, e := range train {
		lengths[i] = len(e.ids)
	}
	// The cached forward pass belongs to the old weights, and the weights
	// change in place during training: drop it now, and make sure nothing
	// cached during training survives it.
	m.cache.close()
	m.cache = nil
	m.w.Version++
	defer func() { m.w.Version++ }()
	return torch.RunTraining(ctx, torch.TrainSpec{
		Req:     req,
		Store:   m.w.Store,
		Lengths: lengths,
		Loss: func(s *torch.Scope, batch []int, _ *rand.Rand) (*ts.Tensor, int) {
			seqs := make([]*encoded, len(batch))
			for i, k := range batch {
				seqs[i] = train[k]
			}
			return m.lmLoss(s, seqs, req.LabelSmoothing), len(seqs) * len(seqs[0].ids)
		},
		Evaluate: func(each torch.Parallel) (float64, float64, error) { return m.evaluate(eval, each) },
		Progress: progress,
	})
}

// encodeExamples encodes queries as Predict does; an answer is required
// (it is what evaluation measures) and prompt plus answer must fit the
// model's positions. field names the request field in errors.
func (m *Model) encodeExamples(field string, qs []sdk.Query) ([]*encoded, error) {
	out := make([]*encoded, len(qs))
	for i, q := range qs {
		e, err := m.encode(q, true)
		if err != nil {
			return nil, sdk.InvalidInputf("%s[%d]: %w", field, i, err)
		}
		out[i] = e
	}
	return out, nil
}

// embedBatch is embed for a batch of b sequences of t tokens (ids
// row-major, no noise): [b,t,E].
func (m *Model) embedBatch(s *torch.Scope, ids []int64, b, t int64) *ts.Tensor {
	tok := s.Reshape(s.IndexSelect(m.p("wte.weight", -1), 0, s.FromInt64(ids, b*t)), b, t, int64(m.cfg.NEmbd))
	return s.Add(tok, s.Narrow(m.p("wpe.weight", -1), 0, 0, t))
}

// forwardBatch runs every layer on sequences of equal length and returns
// the residual stream before ln_f [B,T,E].
func (m *Model) forwardBatch(s *torch.Scope, seqs []*encoded) *ts.Tensor {
	b, t := int64(len(seqs)), int64(len(seqs[0].ids))
	ids := make([]int64, 0, b*t)
	for _, e := range seqs {
		ids = append(ids, e.ids...)
	}
	h := m.embedBatch(s, ids, b, t)
	for l := 0; l < m.cfg.NLayer; l++ {
		h = m.block(s, l, h, nil, nil, 0, nil).out
	}
	return h
}

// lmLoss is the next-token cross-entropy summed over every position of
// sequences of equal length. A sequence reads prompt+answer[:-1] (enc.ids)
// and position i predicts token i+1 of prompt+answer.
func (m *Model) lmLoss(s *torch.Scope, seqs []*encoded, smoothing float64) *ts.Tensor {
	b, t := int64(len(seqs)), int64(len(seqs[0].ids))
	labels := make([]int64, 0, b*t)
	for _, e := range seqs {
		labels = append(labels, e.ids[1:]...)
		labels = append(labels, e.answer[len(e.answer)-1])
	}
	_, logits := m.answerLogProb(s, m.forwardBatch(s, seqs), nil)
	return s.CrossEntropySum(s.Reshape(logits, b*t, int64(m.cfg.VocabSize)), s.FromInt64(labels, b*t), smoothing)
}

// evaluate returns the mean teacher-forced probability of the answers and
// the share of examples whose first answer token has the highest logit
// (Prediction.AnswerRank 0), in batches of examples of equal shape spread
// over each's workers. Sums run in a fixed order, so the result does not
// depend on the workers.
func (m *Model) evaluate(encs []*encoded, each torch.Parallel) (meanProb, accuracy float64, err error) {
	type shape struct{ n, answer int }
	groups := map[shape][]*encoded{}
	for _, e := range encs {
		k := shape{len(e.ids), len(e.answer)}
		groups[k] = append(groups[k], e)
	}
	keys := make([]shape, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].n != keys[j].n {
			return keys[i].n < keys[j].n
		}
		return keys[i].answer < keys[j].answer
	})
	var batches [][]*encoded
	for _, k := range keys {
		for g := groups[k]; len(g) > 0; {
			n := min(evalBatchSize, len(g))
			batches = append(batches, g[:n])
			g = g[n:]
		}
	}
	probs := make([]float64, len(batches))
	hits := make([]int, len(batches))
	err = each(len(batches), func(k int) error {
		var err error
		probs[k], hits[k], err = m.evalBatch(batches[k])
		return err
	})
	if err != nil {
		return 0, 0, err
	}
	var probSum float64
	var top1 int
	for k := range batches {
		probSum += probs[k]
		top1 += hits[k]
	}
	return probSum / float64(len(encs)), float64(top1) / float64(len(encs)), nil
}

// evalBatch returns the sum of the answer probabilities of a batch of
// examples of equal shape and how many rank their first answer token
// first.
func (m *Model) evalBatch(seqs []*encoded) (probSum float64, top1 int, err error) {
	s := torch.NewScope()
	defer s.Close()
	b, t := int64(len(seqs)), len(seqs[0].ids)
	target, na := seqs[0].target, int64(len(seqs[0].answer))
	answers := make([]int64, 0, b*na)
	for _, e := range seqs {
		answers = append(answers, e.answer...)
	}
	h := m.forwardBatch(s, seqs)
	_, logits := m.answerLogProb(s, s.Narrow(h, 1, int64(target), int64(t-target)), nil) // [B,S,V]
	lp := s.Gather(s.LogSoftmax(logits, -1), 2, s.FromInt64(answers, b, na, 1))
	logp := s.Float32s(s.SumDim(lp, false, 1, 2))
	first := s.Float32s(s.Narrow(logits, 1, 0, 1)) // [B,1,V]
	if err := s.Err(); err != nil {
		return 0, 0, fmt.Errorf("evaluate: %w", err)
	}
	v := m.cfg.VocabSize
	for i, e := range seqs {
		probSum += math.Exp(float64(logp[i]))
		row := first[i*v : (i+1)*v]
		want := row[e.answer[0]]
		best := true
		for _, x := range row {
			if x > want {
				best = false
				break
			}
		}
		if best {
			top1++
		}
	}
	return probSum, top1, nil
}
