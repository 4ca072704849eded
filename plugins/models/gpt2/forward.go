package gpt2

import (
	"fmt"
	"math"

	"github.com/sugarme/gotch/ts"

	"github.com/knctl/knctl/plugins/models/torch"
)

// maskValue is what HuggingFace writes into masked attention scores
// (torch.finfo(float32).min); softmax turns it into an exact zero.
const maskValue = -math.MaxFloat32

// ffnHook returns the FFN activation (the input of the second linear layer)
// of one layer from its pre-activation [B,S,F]; it may replace values.
type ffnHook func(s *torch.Scope, pre *ts.Tensor) *ts.Tensor

// layerOut is what one transformer block computed for a run of positions.
type layerOut struct {
	out  *ts.Tensor // residual after the block [B,S,E]
	mid  *ts.Tensor // residual after attention [B,S,E]
	k, v *ts.Tensor // this run's keys and values [B,H,S,D]
	pre  *ts.Tensor // FFN pre-activation [B,S,F]
}

func (m *Model) p(name string, l int) *ts.Tensor {
	if l < 0 {
		return m.w.Get(name)
	}
	return m.w.Get(fmt.Sprintf("h.%d.%s", l, name))
}

// causalMask marks, for S query positions starting at start and start+S key
// positions, the keys a query may not see.
func causalMask(s *torch.Scope, start, n int) *ts.Tensor {
	if s.Err() != nil {
		return nil
	}
	total := start + n
	mask := make([]bool, n*total)
	for i := 0; i < n; i++ {
		for j := start + i + 1; j < total; j++ {
			mask[i*total+j] = true
		}
	}
	t, err := ts.OfSlice(mask)
	if err != nil {
		s.Fail(fmt.Errorf("attention mask: %w", err))
		return nil
	}
	r, err := t.View([]int64{int64(n), int64(total)}, true)
	if err != nil {
		s.Fail(fmt.Errorf("attention mask: %w", err))
		return nil
	}
	return s.Own(r)
}

// block runs layer l on x [B,S,E], the residual stream at positions
// start..start+S-1, attending also to pastK/pastV [1 or B,H,start,D] (nil
// when start is 0). hook, when non-nil, computes the FFN activation.
func (m *Model) block(s *torch.Scope, l int, x, pastK, pastV *ts.Tensor, start int, hook ffnHook) layerOut {
	c := m.cfg
	sz := s.Shape(x)
	if sz == nil {
		return layerOut{}
	}
	b, n := sz[0], sz[1]
	e, h := int64(c.NEmbd), int64(c.NHead)
	d := e / h

	a := s.LayerNorm(x, m.p("ln_1.weight", l), m.p("ln_1.bias", l), c.LayerNormEps)
	qkv := s.Add(s.Matmul(a, m.p("attn.c_attn.weight", l)), m.p("attn.c_attn.bias", l))
	heads := func(t *ts.Tensor) *ts.Tensor { return s.Permute(s.Reshape(t, b, n, h, d), 0, 2, 1, 3) }
	q := heads(s.Narrow(qkv, 2, 0, e))
	k := heads(s.Narrow(qkv, 2, e, e))
	v := heads(s.Narrow(qkv, 2, 2*e, e))
	keys, vals := k, v
	if start > 0 {
		keys = s.Cat(2, s.Expand(pastK, b, h, int64(start), d), k)
		vals = s.Cat(2, s.Expand(pastV, b, h, int64(start), d), v)
	}
	scores := s.Matmul(q, s.Transpose(keys, -1, -2))
	scale := 1.0
	if *c.ScaleAttnWeights {
		scale /= math.Sqrt(float64(d))
	}
	if c.ScaleAttnByInverseLayerIdx {
		scale /= float64(l + 1)
	}
	if scale != 1 {
		scores = s.Scale(scores, scale)
	}
	scores = s.MaskedFill(scores, causalMask(s, start, int(n)), maskValue)
	ctx := s.Matmul(s.Softmax(scores, -1), vals)
	ctx = s.Reshape(s.Permute(ctx, 0, 2, 1, 3), b, n, e)
	mid := s.Add(x, s.Add(s.Matmul(ctx, m.p("attn.c_proj.weight", l)), m.p("attn.c_proj.bias", l)))

	f := s.LayerNorm(mid, m.p("ln_2.weight", l), m.p("ln_2.bias", l), c.LayerNormEps)
	pre := s.Add(s.Matmul(f, m.p("mlp.c_fc.weight", l)), m.p("mlp.c_fc.bias", l))
	var post *ts.Tensor
	if hook != nil {
		post = hook(s, pre)
	} else {
		post = m.act(s, pre)
	}
	out := s.Add(mid, s.Add(s.Matmul(post, m.p("mlp.c_proj.weight", l)), m.p("mlp.c_proj.bias", l)))
	return layerOut{out: out, mid: mid, k: k, v: v, pre: pre}
}

// embed returns the input residual stream [1,T,E] for ids, plus Gaussian
// input noise when sigma > 0.
func (m *Model) embed(s *torch.Scope, ids []int64, noiseSigma float64, noiseSeed int64) *ts.Tensor {
	n := int64(len(ids))
	idx := s.FromInt64(ids, n)
	pos := make([]int64, n)
	for i := range pos {
		pos[i] = int64(i)
	}
	h := s.Add(s.IndexSelect(m.p("wte.weight", -1), 0, idx), s.IndexSelect(m.p("wpe.weight", -1), 0, s.FromInt64(pos, n)))
	if noiseSigma > 0 {
		torch.ManualSeed(noiseSeed)
		h = s.Add(h, s.Scale(s.Randn(n, int64(m.cfg.NEmbd)), noiseSigma))
	}
	return s.Unsqueeze(h, 0)
}

// answerLogProb returns, for residual rows [B,S,E] at the positions that
// predict the answer, log P(answer) per batch row [B] and the logits [B,S,V].
func (m *Model) answerLogProb(s *torch.Scope, rows *ts.Tensor, answer []int64) (logp, logits *ts.Tensor) {
	c := m.cfg
	hf := s.LayerNorm(rows, m.p("ln_f.weight", -1), m.p("ln_f.bias", -1), c.LayerNormEps)
	logits = s.Matmul(hf, s.Transpose(m.p("wte.weight", -1), 0, 1))
	if len(answer) == 0 {
		return nil, logits
	}
	sz := s.Shape(rows)
	if sz == nil {
		return nil, nil
	}
	b := sz[0]
	lsm := s.LogSoftmax(logits, -1)
	idx := s.Expand(s.FromInt64(answer, 1, int64(len(answer)), 1), b, int64(len(answer)), 1)
	lp := s.Gather(lsm, 2, idx) // [B,S,1]
	return s.Reshape(s.SumDim(lp, false, 1, 2), b), logits
}

// baseRun is one forward pass of a prompt (batch 1), cached so that every
// layer's gradient request reuses it.
type baseRun struct {
	key   string
	enc   *encoded
	resid []*ts.Tensor // resid[l]: residual entering layer l [1,T,E]; resid[L]: before ln_f
	mid   []*ts.Tensor // residual after attention of layer l
	k, v  []*ts.Tensor // keys, values of layer l [1,H,T,D]
	pre   []*ts.Tensor // FFN pre-activation of layer l [1,T,F]
	held  *torch.Scope
}

func (b *baseRun) close() {
	if b != nil && b.held != nil {
		b.held.Close()
	}
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
	L := m.cfg.NLayer
	r := &baseRun{key: key, enc: enc, held: s,
		resid: make([]*ts.Tensor, L+1), mid: make([]*ts.Tensor, L), k: make([]*ts.Tensor, L), v: make([]*ts.Tensor, L), pre: make([]*ts.Tensor, L)}
	var sigma float64
	var seed int64
	if noise != nil {
		sigma, seed = noise.sigma, noise.seed
	}
	h := m.embed(s, enc.ids, sigma, seed)
	for l := 0; l < L; l++ {
		r.resid[l] = h
		o := m.block(s, l, h, nil, nil, 0, nil)
		r.mid[l], r.k[l], r.v[l], r.pre[l] = o.mid, o.k, o.v, o.pre
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

type inputNoise struct {
	sigma float64
	seed  int64
}

// scaledRun evaluates, for each alpha, the model with layer l's activation
// at the target position replaced by x = base + alpha (w - base), and
// returns P(answer) [B], dP/dx [B,F] and w [F]. fast selects the cached path;
// the other recomputes every layer for the whole batch (the reference).
func (m *Model) scaledRun(s *torch.Scope, enc *encoded, l int, post bool, alphas []float32, baseline []float32, noise *inputNoise, fast bool) (probs, grads, w *ts.Tensor, err error) {
	br, err := m.base(enc, noise)
	if err != nil {
		return nil, nil, nil, err
	}
	t := enc.target
	T := len(enc.ids)
	F := int64(m.cfg.FFN())
	B := int64(len(alphas))

	preT := s.Reshape(s.Narrow(br.pre[l], 1, int64(t), 1), 1, F)
	if post {
		w = m.act(s, preT)
	} else {
		w = preT
	}
	var b *ts.Tensor
	if baseline != nil {
		b = s.FromFloat32(baseline, 1, F)
	} else {
		b = s.Zeros(1, F)
	}
	al := s.FromFloat32(alphas, B, 1)
	x := s.Leaf(s.Add(b, s.Mul(al, s.Sub(w, b)))) // [B,F]
	toPost := func(s *torch.Scope, v *ts.Tensor) *ts.Tensor {
		if post {
			return v
		}
		return m.act(s, v)
	}

	var rows *ts.Tensor
	if fast {
		// Layer l at position t: attention is unchanged, only the FFN
		// output differs. Positions after t keep their cached residual.
		midT := s.Reshape(s.Narrow(br.mid[l], 1, int64(t), 1), 1, int64(m.cfg.NEmbd))
		outT := s.Add(midT, s.Add(s.Matmul(toPost(s, x), m.p("mlp.c_proj.weight", l)), m.p("mlp.c_proj.bias", l)))
		rows = s.Unsqueeze(outT, 1) // [B,1,E]
		if T-t > 1 {
			rest := s.Narrow(br.resid[l+1], 1, int64(t)+1, int64(T-t-1))
			rows = s.Cat(1, rows, s.Expand(rest, B, int64(T-t-1), int64(m.cfg.NEmbd)))
		}
		for j := l + 1; j < m.cfg.NLayer; j++ {
			pk := s.Narrow(br.k[j], 2, 0, int64(t))
			pv := s.Narrow(br.v[j], 2, 0, int64(t))
			if t == 0 {
				pk, pv = nil, nil
			}
			rows = m.block(s, j, rows, pk, pv, t, nil).out
		}
	} else {
		var sigma float64
		var seed int64
		if noise != nil {
			sigma, seed = noise.sigma, noise.seed
		}
		h := s.Expand(m.embed(s, enc.ids, sigma, seed), B, int64(T), int64(m.cfg.NEmbd))
		for j := 0; j < m.cfg.NLayer; j++ {
			var hook ffnHook
			if j == l {
				hook = func(s *torch.Scope, pre *ts.Tensor) *ts.Tensor {
					if post {
						return torch.ReplaceRow(s, m.act(s, pre), t, x)
					}
					return m.act(s, torch.ReplaceRow(s, pre, t, x))
				}
			}
			h = m.block(s, j, h, nil, nil, 0, hook).out
		}
		rows = s.Narrow(h, 1, int64(t), int64(T-t))
	}
	logp, _ := m.answerLogProb(s, rows, enc.answer)
	probs = s.Exp(logp)
	grads = s.Grad(s.Sum(probs), x)
	if err := s.Err(); err != nil {
		return nil, nil, nil, fmt.Errorf("scaled forward/backward at layer %d: %w", l, err)
	}
	return probs, grads, w, nil
}
