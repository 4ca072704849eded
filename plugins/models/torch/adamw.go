package torch

import (
	"fmt"
	"math"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/sugarme/gotch/ts"
)

// AdamWConfig holds AdamW's hyperparameters. DefaultAdamW gives those of
// torch.optim.AdamW with a chosen weight decay.
type AdamWConfig struct {
	Beta1, Beta2 float64
	Eps          float64
	WeightDecay  float64
	// Decay reports whether the parameter called name, of dims dimensions,
	// gets weight decay. nil means DecayMatrices.
	Decay func(name string, dims int) bool
}

// DefaultAdamW is torch.optim.AdamW's configuration (betas 0.9 and 0.999,
// eps 1e-8) with the given weight decay, applied as DecayMatrices says.
func DefaultAdamW(weightDecay float64) AdamWConfig {
	return AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: weightDecay, Decay: DecayMatrices}
}

// DecayMatrices is the common practice (HuggingFace's Trainer, BERT's and
// GPT-2's training code): weight matrices and embeddings decay; biases and
// layer-norm weights, the one-dimensional parameters, do not, since
// shrinking them towards zero only distorts the scale of activations.
func DecayMatrices(_ string, dims int) bool { return dims >= 2 }

// AdamW is torch.optim.AdamW (amsgrad off, single-tensor path) over named
// parameters: contiguous float32 leaves that require grad, whose .grad a
// backward pass filled. It also clips and zeroes those gradients. The
// element-wise work runs in Go on the tensors' memory (see float32View),
// in float32 with torch's order of operations. Not safe for concurrent use.
type AdamW struct {
	cfg    AdamWConfig
	names  []string
	params map[string]*ts.Tensor
	views  map[string][]float32 // the parameters' memory
	decay  map[string]bool
	state  map[string]*adamState
	grads  map[string]gradView // last validated view of each gradient
	// workers bounds the goroutines of the element-wise passes (RunTraining
	// sets it to its thread budget; 0 or 1: the caller's goroutine only).
	workers int
}

type adamState struct {
	step int
	m, v []float32 // exp_avg, exp_avg_sq
}

type gradView struct {
	ptr  unsafe.Pointer
	data []float32
}

// NewAdamW returns an optimizer for params, which stay owned by the caller
// and must outlive the optimizer.
func NewAdamW(params map[string]*ts.Tensor, cfg AdamWConfig) (*AdamW, error) {
	switch {
	case !(cfg.Beta1 >= 0 && cfg.Beta1 < 1), !(cfg.Beta2 >= 0 && cfg.Beta2 < 1):
		return nil, fmt.Errorf("adamw: betas (%g, %g): expected each in [0, 1)", cfg.Beta1, cfg.Beta2)
	case !(cfg.Eps >= 0) || math.IsInf(cfg.Eps, 0):
		return nil, fmt.Errorf("adamw: eps %g: expected a finite value >= 0", cfg.Eps)
	case !(cfg.WeightDecay >= 0) || math.IsInf(cfg.WeightDecay, 0):
		return nil, fmt.Errorf("adamw: weight decay %g: expected a finite value >= 0", cfg.WeightDecay)
	}
	decays := cfg.Decay
	if decays == nil {
		decays = DecayMatrices
	}
	o := &AdamW{cfg: cfg, params: params, views: map[string][]float32{}, decay: map[string]bool{},
		state: map[string]*adamState{}, grads: map[string]gradView{}}
	for _, name := range sortedNames(params) {
		p := params[name]
		if p == nil {
			return nil, fmt.Errorf("adamw: parameter %s is nil", name)
		}
		shape, err := p.Size() // not Dim, which exits the process on error
		if err != nil {
			return nil, fmt.Errorf("adamw: parameter %s: %w", name, err)
		}
		view, err := float32View(p)
		if err != nil {
			return nil, fmt.Errorf("adamw: parameter %s: %w", name, err)
		}
		o.names = append(o.names, name)
		o.views[name] = view
		o.decay[name] = decays(name, len(shape))
	}
	return o, nil
}

// Decays reports whether weight decay applies to the named parameter.
func (o *AdamW) Decays(name string) bool { return o.decay[name] }

// gradient returns the memory of the named parameter's gradient, or nil
// when it has none. The tensor is validated when first seen (libtorch
// keeps accumulating into the same one, so that is once per run).
func (o *AdamW) gradient(name string) ([]float32, error) {
	g, err := o.params[name].Grad(false)
	if err != nil {
		return nil, fmt.Errorf("read grad of %s: %w", name, err)
	}
	defer g.Drop()
	if ok, err := g.Defined(); err != nil || !ok {
		return nil, err
	}
	ptr, err := g.DataPtr()
	if err != nil {
		return nil, fmt.Errorf("read grad of %s: %w", name, err)
	}
	if v, ok := o.grads[name]; ok && v.ptr == ptr && len(v.data) == len(o.views[name]) {
		return v.data, nil
	}
	data, err := float32View(g)
	if err != nil {
		return nil, fmt.Errorf("grad of %s: %w", name, err)
	}
	if len(data) != len(o.views[name]) {
		return nil, fmt.Errorf("grad of %s: %d values for %d parameters", name, len(data), len(o.views[name]))
	}
	o.grads[name] = gradView{ptr: ptr, data: data}
	return data, nil
}

// withGrads returns the names and gradient memory of the parameters that
// have a gradient, in name order. It calls libtorch, so it runs on the
// caller's goroutine; the element-wise passes then run in parallel.
func (o *AdamW) withGrads() (names []string, grads [][]float32, err error) {
	for _, name := range o.names {
		g, err := o.gradient(name)
		if err != nil {
			return nil, nil, err
		}
		if g != nil {
			names = append(names, name)
			grads = append(grads, g)
		}
	}
	return names, grads, nil
}

// parallel calls fn(0..n-1) on up to o.workers goroutines. The calls only
// touch Go-visible memory of distinct parameters, so their order does not
// matter and results do not depend on the worker count.
func (o *AdamW) parallel(n int, fn func(i int)) {
	workers := min(max(o.workers, 1), n)
	if workers <= 1 {
		for i := 0; i < n; i++ {
			fn(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// Step applies one update with learning rate lr to every parameter that
// has a gradient (parameters without one are skipped and keep their step
// count, as in torch). Per parameter it is torch 1.13's
// _single_tensor_adamw:
//
//	p *= 1 - lr*wd
//	m = beta1*m + (1-beta1)*g
//	v = beta2*v + (1-beta2)*g*g
//	p += -lr/(1-beta1^t) * m / (sqrt(v)/sqrt(1-beta2^t) + eps)
//
// Every product is rounded to float32 on its own (the explicit
// conversions forbid fused multiply-adds, so results do not depend on the
// compiler's target); torch fuses some of them, so results agree with
// torch to rounding, not always bit for bit.
func (o *AdamW) Step(lr float64) error {
	if !(lr >= 0) || math.IsInf(lr, 0) {
		return fmt.Errorf("adamw: learning rate %g: expected a finite value >= 0", lr)
	}
	names, grads, err := o.withGrads()
	if err != nil {
		return fmt.Errorf("adamw: %w", err)
	}
	states := make([]*adamState, len(names))
	for i, name := range names {
		st := o.state[name]
		if st == nil {
			n := len(o.views[name])
			st = &adamState{m: make([]float32, n), v: make([]float32, n)}
			o.state[name] = st
		}
		st.step++
		states[i] = st
	}
	c := o.cfg
	o.parallel(len(names), func(i int) {
		p, g, st := o.views[names[i]], grads[i], states[i]
		t := float64(st.step)
		if wd := lr * c.WeightDecay; o.decay[names[i]] && wd != 0 {
			k := float32(1 - wd)
			for j := range p {
				p[j] *= k
			}
		}
		b1, c1 := float32(c.Beta1), float32(1-c.Beta1)
		b2, c2 := float32(c.Beta2), float32(1-c.Beta2)
		bc2 := float32(math.Sqrt(1 - math.Pow(c.Beta2, t)))
		eps := float32(c.Eps)
		negStep := float32(-lr / (1 - math.Pow(c.Beta1, t)))
		m, v := st.m, st.v
		for j, gj := range g {
			m[j] = float32(m[j]*b1) + float32(gj*c1)
			v[j] = float32(v[j]*b2) + float32(float32(gj*c2)*gj)
			// sqrt in float64 rounded to float32 is the correctly rounded
			// float32 square root, as libtorch's.
			denom := float32(float32(math.Sqrt(float64(v[j])))/bc2) + eps
			// addcdiv_ computes (value*m)/denom, in that order.
			p[j] += float32(float32(negStep*m[j]) / denom)
		}
	})
	return nil
}

// ClipGradNorm scales the gradients in place so that their global L2 norm
// is at most maxNorm, as torch.nn.utils.clip_grad_norm_ (coefficient
// maxNorm/(norm+1e-6), applied when below 1), and returns the norm before
// clipping. Squares are summed in float64 per parameter, then over
// parameters in name order, so the norm does not depend on the workers.
func (o *AdamW) ClipGradNorm(maxNorm float64) (float64, error) {
	_, grads, err := o.withGrads()
	if err != nil {
		return 0, fmt.Errorf("clip gradients: %w", err)
	}
	sums := make([]float64, len(grads))
	o.parallel(len(grads), func(i int) {
		var sq float64
		for _, x := range grads[i] {
			sq += float64(x) * float64(x)
		}
		sums[i] = sq
	})
	var sq float64
	for _, x := range sums {
		sq += x
	}
	norm := math.Sqrt(sq)
	if coef := maxNorm / (norm + 1e-6); coef < 1 {
		k := float32(coef)
		o.parallel(len(grads), func(i int) {
			g := grads[i]
			for j := range g {
				g[j] *= k
			}
		})
	}
	return norm, nil
}

// ZeroGrad zeroes the gradients in place (keeping the buffers, as torch's
// zero_grad(set_to_none=False)), so the next backward pass does not add to
// this one's.
func (o *AdamW) ZeroGrad() error {
	_, grads, err := o.withGrads()
	if err != nil {
		return fmt.Errorf("zero gradients: %w", err)
	}
	o.parallel(len(grads), func(i int) { clear(grads[i]) })
	return nil
}

// Close releases the optimizer's state; the parameters are untouched.
func (o *AdamW) Close() {
	o.state = map[string]*adamState{}
	o.grads = map[string]gradView{}
}

// NoGrad runs fn with libtorch's grad mode off and restores the previous
// mode afterwards, also when fn panics (gotch's ts.NoGrad does not). Grad
// mode is thread-local in libtorch and a goroutine may move between OS
// threads between cgo calls, so fn runs locked to one thread: without
// that, an op may land on a thread where grad mode is still on.
func NoGrad(fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	prev, err := ts.GradSetEnabled(false)
	if err != nil {
		return fmt.Errorf("disable grad mode: %w", err)
	}
	defer func() { _, _ = ts.GradSetEnabled(prev) }()
	return fn()
}

// WarmupLinearLR is the learning rate of optimizer step step (0-based) out
// of total: linear warm-up from base/warmup to base over the first warmup
// steps, then linear decay reaching 0 at step total (the step after the
// last), so that no step is taken with a zero rate. A warm-up longer than
// the run is cut off at its end.
func WarmupLinearLR(base float64, step, warmup, total int) float64 {
	if step < warmup {
		return base * float64(step+1) / float64(warmup)
	}
	if total <= warmup {
		return base
	}
	return base * math.Max(0, float64(total-step)/float64(total-warmup))
}

func sortedNames(m map[string]*ts.Tensor) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
