package bert

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
// no graph kept it only bounds the size of the activations and logits.
const evalBatchSize = 128

// Train implements sdk.Trainer with the masked-LM objective, through
// torch.RunTraining (AdamW, warm-up then linear decay, clipping at global
// norm 1, batches of examples of equal token length so no padding or
// attention mask is needed).
//
// An example reads as Predict reads it: "[CLS] prompt [SEP]" with the
// prompt's mask slot widened to one [MASK] per answer piece, and those
// masks are labelled with the answer's pieces. As masked-LM
// regularisation, each other token that is not a special token is also
// replaced by [MASK], independently with probability req.MaskRate (0:
// none), and labelled with its original id; the draws come from the rng
// RunTraining passes for the step and micro-batch, so a seed fixes them.
// The loss is the cross-entropy, with label smoothing as torch's
// CrossEntropyLoss applies it, summed over the labelled tokens and divided
// by their number.
//
// The evaluation is Predict's: the joint probability of the answer's
// pieces with all its masks present (and no other token masked), and
// whether its first piece has the highest logit at the first mask. On
// success the model holds the trained weights; on error or cancellation it
// keeps its weights bit for bit. Training refuses to start while noise is
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
		Loss: func(s *torch.Scope, batch []int, rng *rand.Rand) (*ts.Tensor, int) {
			seqs := make([]*encoded, len(batch))
			for i, k := range batch {
				seqs[i] = train[k]
			}
			mb := m.maskBatch(seqs, req.MaskRate, rng)
			return m.mlmLoss(s, mb, len(seqs), len(seqs[0].ids), req.LabelSmoothing), len(mb.labels)
		},
		Evaluate: func(each torch.Parallel) (float64, float64, error) { return m.evaluate(eval, each) },
		Progress: progress,
	})
}

// encodeExamples encodes queries as Predict does; an answer is required
// (it is what training learns and evaluation measures) and the prompt with
// the answer's masks must fit the model's positions. field names the
// request field in errors.
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

// mlmBatch is the input and labels of a micro-batch of B sequences of T
// tokens.
type mlmBatch struct {
	ids []int64 // [B*T] input ids, row-major, with the extra masks in
	// rows are the flat positions (b*T+t) that carry a label, sequence by
	// sequence and in position order; labels[i] is the label of rows[i].
	rows   []int64
	labels []int64
}

// maskBatch builds the inputs of sequences of equal length: each
// sequence's answer masks are labelled with the answer's pieces, and
// every other non-special token is masked with probability rate and
// labelled with its own id. The rng is drawn once per eligible token, in
// sequence and position order, so the draws depend only on the rng's seed
// and the batch.
func (m *Model) maskBatch(seqs []*encoded, rate float64, rng *rand.Rand) mlmBatch {
	t := len(seqs[0].ids)
	mask := int64(m.tok.MaskID())
	mb := mlmBatch{ids: make([]int64, 0, len(seqs)*t)}
	for b, e := range seqs {
		base := b * t
		mb.ids = append(mb.ids, e.ids...)
		j := 0 // next answer piece; targets are consecutive and ascending
		for p, id := range e.ids {
			switch {
			case j < len(e.targets) && p == e.targets[j]:
				mb.rows = append(mb.rows, int64(base+p))
				mb.labels = append(mb.labels, e.answer[j])
				j++
			case rate > 0 && !m.isSpecial(id) && rng.Float64() < rate:
				mb.ids[base+p] = mask
				mb.rows = append(mb.rows, int64(base+p))
				mb.labels = append(mb.labels, id)
			}
		}
	}
	return mb
}

// isSpecial reports whether id is one of the tokenizer's special tokens
// ([CLS], [SEP], [MASK], [UNK], [PAD]), which are never masked for the
// regularisation: [CLS] and [SEP] frame every input, and [UNK] says
// nothing a model should learn to predict.
func (m *Model) isSpecial(id int64) bool {
	_, ok := m.specials[int(id)]
	return ok
}

// mlmLoss is the cross-entropy summed over the labelled rows of a masked
// batch of b sequences of t tokens. The MLM head runs on the labelled rows
// only: the other rows' logits would be computed and thrown away.
func (m *Model) mlmLoss(s *torch.Scope, mb mlmBatch, b, t int, smoothing float64) *ts.Tensor {
	n := int64(len(mb.rows))
	h := s.Reshape(m.encodeBatch(s, mb.ids, b, t), int64(b*t), int64(m.cfg.HiddenSize))
	logits := m.logits(s, s.IndexSelect(h, 0, s.FromInt64(mb.rows, n))) // [N,V]
	return s.CrossEntropySum(logits, s.FromInt64(mb.labels, n), smoothing)
}

// embedBatch is embed for b sequences of t tokens (ids row-major, no
// noise), in the same order of operations: [B,T,H].
func (m *Model) embedBatch(s *torch.Scope, ids []int64, b, t int) *ts.Tensor {
	B, T, H := int64(b), int64(t), int64(m.cfg.HiddenSize)
	words := s.Reshape(s.IndexSelect(m.p(wordEmbeddings), 0, s.FromInt64(ids, B*T)), B, T, H)
	typ := s.Narrow(m.p("embeddings.token_type_embeddings.weight"), 0, 0, 1)
	pos := s.Narrow(m.p("embeddings.position_embeddings.weight"), 0, 0, T)
	e := s.Add(s.Add(words, typ), pos)
	return s.LayerNorm(e, m.p("embeddings.LayerNorm.weight"), m.p("embeddings.LayerNorm.bias"), m.cfg.LayerNormEps)
}

// encodeBatch runs the embeddings and every encoder layer on b sequences
// of t tokens and returns the encoder's output [B,T,H].
func (m *Model) encodeBatch(s *torch.Scope, ids []int64, b, t int) *ts.Tensor {
	h := m.embedBatch(s, ids, b, t)
	for l := 0; l < m.cfg.NumHiddenLayers; l++ {
		h = m.layer(s, l, h, span{}, nil, nil).out
	}
	return h
}

// evaluate returns the mean joint probability of the answers and the
// share of examples whose first answer piece has the highest logit at the
// first mask (Prediction.AnswerRank 0), in batches of examples of equal
// length spread over each's workers. Sums run in a fixed order, so the
// result does not depend on the workers.
func (m *Model) evaluate(encs []*encoded, each torch.Parallel) (meanProb, accuracy float64, err error) {
	groups := map[int][]*encoded{}
	for _, e := range encs {
		groups[len(e.ids)] = append(groups[len(e.ids)], e)
	}
	keys := make([]int, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Ints(keys)
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
// examples of equal length (their masks and answers may differ) and how
// many rank their first answer piece first.
func (m *Model) evalBatch(seqs []*encoded) (probSum float64, top1 int, err error) {
	s := torch.NewScope()
	defer s.Close()
	b, t := len(seqs), len(seqs[0].ids)
	ids := make([]int64, 0, b*t)
	var rows, answers, firsts []int64
	for i, e := range seqs {
		ids = append(ids, e.ids...)
		firsts = append(firsts, int64(len(rows)))
		for j, p := range e.targets {
			rows = append(rows, int64(i*t+p))
			answers = append(answers, e.answer[j])
		}
	}
	n := int64(len(rows))
	h := s.Reshape(m.encodeBatch(s, ids, b, t), int64(b*t), int64(m.cfg.HiddenSize))
	logits := m.logits(s, s.IndexSelect(h, 0, s.FromInt64(rows, n))) // [N,V]
	lp := s.Float32s(s.Gather(s.LogSoftmax(logits, -1), 1, s.FromInt64(answers, n, 1)))
	first := s.Float32s(s.IndexSelect(logits, 0, s.FromInt64(firsts, int64(b)))) // [B,V]
	if err := s.Err(); err != nil {
		return 0, 0, fmt.Errorf("evaluate: %w", err)
	}
	v := m.cfg.VocabSize
	for i, e := range seqs {
		var logp float64
		for j := range e.targets {
			logp += float64(lp[int(firsts[i])+j])
		}
		probSum += math.Exp(logp)
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
