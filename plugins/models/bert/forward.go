package bert

import (
	"fmt"
	"math"

	"github.com/sugarme/gotch/ts"

	"github.com/knctl/knctl/plugins/models/torch"
)

// ffnHook returns the FFN activation (the input of output.dense) of one
// layer from its pre-activation [B,S,F]; it may replace values.
type ffnHook func(s *torch.Scope, pre *ts.Tensor) *ts.Tensor

// span is a run of positions; the zero span means every position.
type span struct{ start, n int }

// layerOut is what one encoder layer computed for the positions it was
// asked for.
type layerOut struct {
	out     *ts.Tensor // hidden state after the layer [B,S,H]
	mid     *ts.Tensor // attention output after its LayerNorm: the FFN's input [B,S,H]
	pre     *ts.Tensor // intermediate.dense output [B,S,F]
	q, k, v *ts.Tensor // query [B,S,H], key and value [B,T,H] projections, before the split into heads
}

// reuse tells layer that its input equals a cached run's input except at
// the rows of changed, so that the query, key and value projections of
// every other row are taken from the cache ([1,T,H] each).
type reuse struct {
	q, k, v *ts.Tensor
	changed span
}

func (m *Model) p(name string) *ts.Tensor { return m.w.Get(name) }

func (m *Model) lp(l int, name string) *ts.Tensor { return m.w.Get(layerParam(l, name)) }

// linear is torch.nn.Linear: x W^T + b with W stored [out, in].
func linear(s *torch.Scope, x, w, b *ts.Tensor) *ts.Tensor {
	return s.Add(s.Matmul(x, s.Transpose(w, 0, 1)), b)
}

// layer runs encoder layer l (BertLayer: self-attention, residual and
// LayerNorm, then the FFN, residual and LayerNorm) on the hidden states x
// [B,T,H]. Keys and values come from every position; queries, and so the
// returned tensors, only from the positions of rows (all when rows is the
// zero span). hook, when non-nil, computes the FFN activation. re, when
// non-nil, supplies the projections of the rows that did not change.
func (m *Model) layer(s *torch.Scope, l int, x *ts.Tensor, rows span, hook ffnHook, re *reuse) layerOut {
	c := m.cfg
	sz := s.Shape(x)
	if sz == nil {
		return layerOut{}
	}
	b, t := sz[0], sz[1]
	xq, n := x, t
	if rows.n > 0 {
		xq, n = s.Narrow(x, 1, int64(rows.start), int64(rows.n)), int64(rows.n)
	}
	e, h := int64(c.HiddenSize), int64(c.NumAttentionHeads)
	d := e / h
	proj := func(which string, in *ts.Tensor) *ts.Tensor {
		return linear(s, in, m.lp(l, "attention.self."+which+".weight"), m.lp(l, "attention.self."+which+".bias"))
	}
	var qLin, kLin, vLin *ts.Tensor
	if re == nil {
		qLin, kLin, vLin = proj("query", xq), proj("key", x), proj("value", x)
	} else {
		// Project only the changed rows and splice them into the cached
		// projections of the others.
		xc := s.Narrow(x, 1, int64(re.changed.start), int64(re.changed.n))
		splice := func(cached, fresh *ts.Tensor) *ts.Tensor {
			return torch.ReplaceRows(s, s.Expand(cached, b, t, int64(c.HiddenSize)), re.changed.start, fresh)
		}
		kLin, vLin = splice(re.k, proj("key", xc)), splice(re.v, proj("value", xc))
		switch {
		case rows.n == 0:
			qLin = splice(re.q, proj("query", xc))
		case rows == re.changed:
			qLin = proj("query", xc)
		default:
			qLin = proj("query", xq)
		}
	}
	heads := func(v *ts.Tensor, npos int64) *ts.Tensor { return s.Permute(s.Reshape(v, b, npos, h, d), 0, 2, 1, 3) }
	q, k, v := heads(qLin, n), heads(kLin, t), heads(vLin, t)
	// No attention mask: inputs are never padded, and HF's all-ones mask
	// adds exactly zero to the scores.
	scores := s.Scale(s.Matmul(q, s.Transpose(k, -1, -2)), 1/math.Sqrt(float64(d)))
	ctx := s.Matmul(s.Softmax(scores, -1), v)
	ctx = s.Reshape(s.Permute(ctx, 0, 2, 1, 3), b, n, e)
	mid := s.LayerNorm(s.Add(linear(s, ctx, m.lp(l, "attention.output.dense.weight"), m.lp(l, "attention.output.dense.bias")), xq),
		m.lp(l, "attention.output.LayerNorm.weight"), m.lp(l, "attention.output.LayerNorm.bias"), c.LayerNormEps)

	pre := linear(s, mid, m.lp(l, "intermediate.dense.weight"), m.lp(l, "intermediate.dense.bias"))
	var post *ts.Tensor
	if hook != nil {
		post = hook(s, pre)
	} else {
		post = m.act(s, pre)
	}
	return layerOut{out: m.ffnOut(s, l, post, mid), mid: mid, pre: pre, q: qLin, k: kLin, v: vLin}
}

// ffnOut is BertOutput: LayerNorm(output.dense(post) + mid).
func (m *Model) ffnOut(s *torch.Scope, l int, post, mid *ts.Tensor) *ts.Tensor {
	return s.LayerNorm(s.Add(linear(s, post, m.lp(l, "output.dense.weight"), m.lp(l, "output.dense.bias")), mid),
		m.lp(l, "output.LayerNorm.weight"), m.lp(l, "output.LayerNorm.bias"), m.cfg.LayerNormEps)
}

// embed is BertEmbeddings for ids with token type 0: LayerNorm(word +
// token type + position), plus Gaussian noise on the summed input
// embeddings when noise is set. It returns [1,T,H].
func (m *Model) embed(s *torch.Scope, ids []int64, noise *inputNoise) *ts.Tensor {
	n := int64(len(ids))
	words := s.IndexSelect(m.p(wordEmbeddings), 0, s.FromInt64(ids, n))
	typ := s.Narrow(m.p("embeddings.token_type_embeddings.weight"), 0, 0, 1)
	pos := s.Narrow(m.p("embeddings.position_embeddings.weight"), 0, 0, n)
	// transformers adds in this order: (words + token type) + position.
	e := s.Add(s.Add(words, typ), pos)
	if noise != nil && noise.sigma > 0 {
		torch.ManualSeed(noise.seed)
		e = s.Add(e, s.Scale(s.Randn(n, int64(m.cfg.HiddenSize)), noise.sigma))
	}
	e = s.LayerNorm(e, m.p("embeddings.LayerNorm.weight"), m.p("embeddings.LayerNorm.bias"), m.cfg.LayerNormEps)
	return s.Unsqueeze(e, 0)
}

// logits is BertOnlyMLMHead on hidden states [B,S,H]: transform (dense,
// activation, LayerNorm), then the decoder (the word embeddings unless
// config.json unties them) plus cls.predictions.bias. It returns [B,S,V].
func (m *Model) logits(s *torch.Scope, hidden *ts.Tensor) *ts.Tensor {
	t := linear(s, hidden, m.p("cls.predictions.transform.dense.weight"), m.p("cls.predictions.transform.dense.bias"))
	t = s.LayerNorm(m.act(s, t), m.p("cls.predictions.transform.LayerNorm.weight"), m.p("cls.predictions.transform.LayerNorm.bias"), m.cfg.LayerNormEps)
	dec := wordEmbeddings
	if !m.cfg.tied() {
		dec = headDecoderW
	}
	return linear(s, t, m.p(dec), m.p(headBias))
}

// answerLogProb returns, for hidden states [B,k,H] at the k target
// positions, log P(answer) = sum_j log p(piece j at mask j) per batch row:
// [B].
func (m *Model) answerLogProb(s *torch.Scope, rows *ts.Tensor, answer []int64) *ts.Tensor {
	sz := s.Shape(rows)
	if sz == nil {
		return nil
	}
	b, k := sz[0], int64(len(answer))
	lsm := s.LogSoftmax(m.logits(s, rows), -1)
	idx := s.Expand(s.FromInt64(answer, 1, k, 1), b, k, 1)
	return s.Reshape(s.SumDim(s.Gather(lsm, 2, idx), false, 1, 2), b)
}

// baseRun is one forward pass of a prompt (batch 1), cached so that every
// layer's gradient request reuses it.
type baseRun struct {
	key   string
	enc   *encoded
	resid []*ts.Tensor // resid[l]: hidden state entering layer l [1,T,H]; resid[L]: the encoder's output
	mid   []*ts.Tensor // attention output (after LayerNorm) of layer l [1,T,H]
	pre   []*ts.Tensor // FFN pre-activation of layer l [1,T,F]
	// proj[l] holds layer l's query, key and value projections [1,T,H].
	proj []reuse
	held *torch.Scope
}

func (b *baseRun) close() {
	if b != nil && b.held != nil {
		b.held.Close()
	}
}

type inputNoise struct {
	sigma float64
	seed  int64
}

// base returns the cached forward pass of enc, running it when needed.
func (m *Model) base(enc *encoded, noise *inputNoise) (*baseRun, error) {
	key := fmt.Sprintf("%d|%v|%v", m.w.Version, enc.ids, noise)
	if m.cache != nil && m.cache.key == key {
		return m.cache, nil
	}
	m.cache.close()
	m.cache = nil
	s := torch.NewScope()
	L := m.cfg.NumHiddenLayers
	r := &baseRun{key: key, enc: enc, held: s,
		resid: make([]*ts.Tensor, L+1), mid: make([]*ts.Tensor, L), pre: make([]*ts.Tensor, L), proj: make([]reuse, L)}
	h := m.embed(s, enc.ids, noise)
	for l := 0; l < L; l++ {
		r.resid[l] = h
		o := m.layer(s, l, h, span{}, nil, nil)
		r.mid[l], r.pre[l] = o.mid, o.pre
		r.proj[l] = reuse{q: o.q, k: o.k, v: o.v}
		h = o.out
	}
	r.resid[L] = h
	if err := s.Err(); err != nil {
		s.Close()
		return nil, fmt.Errorf("forward pass: %w", err)
	}
	m.cache = r
	return r, nil
}

// scaledRun evaluates, for each alpha, the model with layer l's activation
// at the target positions replaced by x = base + alpha (w - base), and
// returns P(answer) [B], dP/dx [B,k,F] and w [k,F]. fast selects the cached
// path; the other recomputes every layer for the whole batch (the
// reference).
func (m *Model) scaledRun(s *torch.Scope, enc *encoded, l int, post bool, alphas []float32, baseline []float32, noise *inputNoise, fast bool) (probs, grads, w *ts.Tensor, err error) {
	br, err := m.base(enc, noise)
	if err != nil {
		return nil, nil, nil, err
	}
	first, k := enc.first(), int64(len(enc.targets))
	T := int64(len(enc.ids))
	F, H := int64(m.cfg.IntermediateSize), int64(m.cfg.HiddenSize)
	B := int64(len(alphas))
	L := m.cfg.NumHiddenLayers

	preT := s.Narrow(br.pre[l], 1, int64(first), k) // [1,k,F]
	if post {
		w = m.act(s, preT)
	} else {
		w = preT
	}
	var b *ts.Tensor
	if baseline != nil {
		b = s.FromFloat32(baseline, 1, k, F)
	} else {
		b = s.Zeros(1, k, F)
	}
	al := s.FromFloat32(alphas, B, 1, 1)
	x := s.Leaf(s.Add(b, s.Mul(al, s.Sub(w, b)))) // [B,k,F]
	toPost := func(s *torch.Scope, v *ts.Tensor) *ts.Tensor {
		if post {
			return v
		}
		return m.act(s, v)
	}

	var rows *ts.Tensor // hidden states at the target positions after the last layer [B,k,H]
	if fast {
		// Layer l: attention is unchanged, and the FFN acts position by
		// position, so only the target rows of its output differ; the
		// others keep their cached value.
		midT := s.Narrow(br.mid[l], 1, int64(first), k)
		rows = m.ffnOut(s, l, toPost(s, x), midT) // [B,k,H]
		if l+1 < L {
			h := torch.ReplaceRows(s, s.Expand(br.resid[l+1], B, T, H), first, rows)
			targets := span{first, int(k)}
			for j := l + 1; j < L; j++ {
				// Every position attends to the changed targets, so layers
				// above l run on all of them, except the last, whose output
				// is needed only at the targets. Layer l+1's input differs
				// only at the targets, so the other rows' projections come
				// from the cache.
				var r span
				if j == L-1 {
					r = targets
				}
				var re *reuse
				if j == l+1 {
					re = &reuse{q: br.proj[j].q, k: br.proj[j].k, v: br.proj[j].v, changed: targets}
				}
				h = m.layer(s, j, h, r, nil, re).out
			}
			rows = h
		}
	} else {
		h := s.Expand(m.embed(s, enc.ids, noise), B, T, H)
		for j := 0; j < L; j++ {
			var hook ffnHook
			if j == l {
				hook = func(s *torch.Scope, pre *ts.Tensor) *ts.Tensor {
					if post {
						return torch.ReplaceRows(s, m.act(s, pre), first, x)
					}
					return m.act(s, torch.ReplaceRows(s, pre, first, x))
				}
			}
			h = m.layer(s, j, h, span{}, hook, nil).out
		}
		rows = s.Narrow(h, 1, int64(first), k)
	}
	probs = s.Exp(m.answerLogProb(s, rows, enc.answer))
	grads = s.Grad(s.Sum(probs), x)
	if err := s.Err(); err != nil {
		return nil, nil, nil, fmt.Errorf("scaled forward/backward at layer %d: %w", l, err)
	}
	return probs, grads, w, nil
}
