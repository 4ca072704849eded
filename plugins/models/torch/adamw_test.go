package torch

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/sugarme/gotch/ts"

	"github.com/knctl/knctl/sdk"
)

// leaves builds parameters that require grad.
func leaves(t *testing.T, vals map[string][]float32, shapes map[string][]int64) map[string]*ts.Tensor {
	s := NewScope()
	defer s.Close()
	out := map[string]*ts.Tensor{}
	for name, v := range vals {
		out[name] = s.Keep(s.Leaf(s.FromFloat32(v, shapes[name]...)))
	}
	require.NoError(t, s.Err())
	t.Cleanup(func() { DropAll(out) })
	return out
}

// setGrads makes a backward pass leave exactly grads[name] in each named
// parameter's .grad: d/dp sum(p*g) = g.
func setGrads(t *testing.T, opt *AdamW, params map[string]*ts.Tensor, grads map[string][]float32) {
	require.NoError(t, opt.ZeroGrad())
	s := NewScope()
	defer s.Close()
	var loss *ts.Tensor
	for name, g := range grads {
		sz := s.Shape(params[name])
		term := s.Sum(s.Mul(params[name], s.FromFloat32(g, sz...)))
		if loss == nil {
			loss = term
		} else {
			loss = s.Add(loss, term)
		}
	}
	require.NoError(t, s.Err())
	require.NoError(t, loss.Backward())
}

func values(t *testing.T, x *ts.Tensor) []float32 {
	s := NewScope()
	defer s.Close()
	v := s.Float32s(x)
	require.NoError(t, s.Err())
	return v
}

func gradValues(t *testing.T, p *ts.Tensor) []float32 {
	g, err := p.Grad(false)
	require.NoError(t, err)
	defer g.Drop()
	return values(t, g)
}

func assertClose(t *testing.T, want []float64, got []float32, msg string) {
	t.Helper()
	require.Len(t, got, len(want), msg)
	for i := range want {
		// torch fuses some multiply-adds that gotch cannot: a few ulps.
		assert.InDelta(t, want[i], float64(got[i]), 1e-6*math.Max(1, math.Abs(want[i])), "%s[%d]", msg, i)
	}
}

// The reference numbers come from torch 1.13 (testdata/adamw_ref.py).
func TestAdamWMatchesTorch(t *testing.T) {
	params := leaves(t,
		map[string][]float32{"w": {0.5, -1.25, 2.0, 0.1, 0.0, -0.3}, "b": {0.25, -0.5, 1.0}, "never": {3, -4}},
		map[string][]int64{"w": {2, 3}, "b": {3}, "never": {2}})
	// torch's reference uses parameter groups: decay on w only, which is
	// what DecayMatrices selects.
	opt, err := NewAdamW(params, DefaultAdamW(0.1))
	require.NoError(t, err)
	defer opt.Close()
	assert.True(t, opt.Decays("w"))
	assert.False(t, opt.Decays("b"))

	steps := []struct {
		lr     float64
		gw, gb []float32
		w, b   []float64
	}{
		{0.01, []float32{0.3, -0.2, 0.05, 1.5, -0.7, 0.0}, []float32{0.1, 0.2, -0.3},
			[]float64{0.4895000159740448, -1.2387499809265137, 1.9880000352859497, 0.08990000188350677, 0.009999999776482582, -0.2997000217437744},
			[]float64{0.23999999463558197, -0.5099999904632568, 1.0099999904632568}},
		{0.02, []float32{-0.1, 0.4, 0.25, 0.5, 0.9, -2.0}, []float32{0.0, -0.6, 0.3},
			[]float64{0.4805166721343994, -1.2435945272445679, 1.9668030738830566, 0.07229892909526825, 0.006455019116401672, -0.284217894077301},
			[]float64{0.2265988290309906, -0.5001161694526672, 1.0089473724365234}},
		{0.005, []float32{1e-4, -3.0, 0.7, 0.2, 0.2, 0.2}, []float32{5.0, 0.01, -0.02},
			[]float64{0.4787285327911377, -1.24002206325531, 1.9616798162460327, 0.06852156668901443, 0.005228624679148197, -0.2815319299697876},
			[]float64{0.22335366904735565, -0.4982568919658661, 1.008894681930542}},
	}
	for i, st := range steps {
		setGrads(t, opt, params, map[string][]float32{"w": st.gw, "b": st.gb})
		require.NoError(t, opt.Step(st.lr))
		assertClose(t, st.w, values(t, params["w"]), "w")
		assertClose(t, st.b, values(t, params["b"]), "b")
		assert.Equal(t, []float32{3, -4}, values(t, params["never"]), "step %d: a parameter without a gradient is not touched", i+1)
		for _, p := range params {
			rg, err := p.RequiresGrad()
			require.NoError(t, err)
			assert.True(t, rg, "the update keeps the parameters leaves")
		}
	}

	setGrads(t, opt, params, map[string][]float32{"w": {3, -4, 1, 0.5, 2, -1.5}, "b": {0.25, -7, 2}})
	total, err := opt.ClipGradNorm(1.0)
	require.NoError(t, err)
	assert.InDelta(t, 9.25, total, 1e-6)
	assertClose(t, []float64{0.32432428002357483, -0.4324323832988739, 0.10810809582471848, 0.05405404791235924, 0.21621619164943695, -0.16216214001178741}, gradValues(t, params["w"]), "clipped w.grad")
	assertClose(t, []float64{0.02702702395617962, -0.7567566633224487, 0.21621619164943695}, gradValues(t, params["b"]), "clipped b.grad")

	// Below the limit nothing changes, bit for bit.
	setGrads(t, opt, params, map[string][]float32{"w": {0.1, 0, 0, 0, 0, 0.2}, "b": {0, 0.3, 0}})
	total, err = opt.ClipGradNorm(1.0)
	require.NoError(t, err)
	assert.InDelta(t, math.Sqrt(0.14), total, 1e-6)
	assert.Equal(t, []float32{0.1, 0, 0, 0, 0, 0.2}, gradValues(t, params["w"]))

	require.NoError(t, opt.ZeroGrad())
	assert.Equal(t, make([]float32, 6), gradValues(t, params["w"]))
}

// One step by hand: with m and v starting at zero the bias-corrected
// update is lr*g/(|g|+eps), i.e. lr*sign(g), after the decay.
func TestAdamWFirstStepByHand(t *testing.T) {
	params := leaves(t, map[string][]float32{"w": {1, -2, 0.5, 4}}, map[string][]int64{"w": {2, 2}})
	opt, err := NewAdamW(params, DefaultAdamW(0.5))
	require.NoError(t, err)
	defer opt.Close()
	setGrads(t, opt, params, map[string][]float32{"w": {0.25, -3, 0, 1e-3}})
	require.NoError(t, opt.Step(0.1))
	want := []float64{1*0.95 - 0.1, -2*0.95 + 0.1, 0.5 * 0.95, 4*0.95 - 0.1*1e-3/(1e-3+1e-8)}
	assertClose(t, want, values(t, params["w"]), "w")
}

func TestAdamWRejectsBadConfig(t *testing.T) {
	params := leaves(t, map[string][]float32{"w": {1}}, map[string][]int64{"w": {1}})
	for _, c := range []AdamWConfig{
		{Beta1: 1, Beta2: 0.999}, {Beta1: 0.9, Beta2: -0.1}, {Beta1: 0.9, Beta2: 0.999, Eps: math.NaN()},
		{Beta1: 0.9, Beta2: 0.999, WeightDecay: -1},
	} {
		_, err := NewAdamW(params, c)
		assert.Error(t, err, "%+v", c)
	}
	opt, err := NewAdamW(params, DefaultAdamW(0))
	require.NoError(t, err)
	defer opt.Close()
	assert.Error(t, opt.Step(math.Inf(1)))

	// The update runs on the tensors' memory: only contiguous float32.
	s := NewScope()
	defer s.Close()
	transposed := s.Transpose(s.FromFloat32([]float32{1, 2, 3, 4, 5, 6}, 2, 3), 0, 1)
	ints := s.FromInt64([]int64{1, 2}, 2)
	require.NoError(t, s.Err())
	for name, p := range map[string]*ts.Tensor{"transposed": transposed, "int64": ints} {
		_, err := NewAdamW(map[string]*ts.Tensor{name: p}, DefaultAdamW(0))
		assert.ErrorContains(t, err, "contiguous float32", name)
	}
}

func TestWarmupLinearLR(t *testing.T) {
	var got []float64
	for step := 0; step < 6; step++ {
		got = append(got, WarmupLinearLR(1, step, 2, 6))
	}
	assert.Equal(t, []float64{0.5, 1, 1, 0.75, 0.5, 0.25}, got)
	assert.Equal(t, 2.0, WarmupLinearLR(2, 0, 0, 1), "a single step without warm-up uses the full rate")
	assert.Equal(t, 1.0, WarmupLinearLR(1, 2, 3, 3), "warm-up over every step never decays")
	assert.Equal(t, 0.3, WarmupLinearLR(1, 2, 10, 3), "a warm-up longer than the run is cut off")
}

func TestLengthBatches(t *testing.T) {
	lengths := []int{5, 7, 5, 5, 9, 7, 5, 5, 7}
	a := LengthBatches(lengths, 2, rand.New(rand.NewPCG(1, 2)))
	b := LengthBatches(lengths, 2, rand.New(rand.NewPCG(1, 2)))
	assert.Equal(t, a, b, "seeded")
	seen := map[int]bool{}
	for _, batch := range a {
		require.NotEmpty(t, batch)
		require.LessOrEqual(t, len(batch), 2)
		for _, i := range batch {
			assert.Equal(t, lengths[batch[0]], lengths[i], "one length per batch")
			assert.False(t, seen[i])
			seen[i] = true
		}
	}
	assert.Len(t, seen, len(lengths), "every example once per epoch")
	c := LengthBatches(lengths, 2, rand.New(rand.NewPCG(3, 2)))
	assert.NotEqual(t, a, c, "another seed, another order")
}

func TestCheckTrainRequest(t *testing.T) {
	ok := sdk.TrainRequest{Examples: []sdk.Query{{Prompt: "a", Answer: " b"}}, Steps: 10, BatchSize: 2, LearningRate: 1e-3}
	require.NoError(t, CheckTrainRequest(ok))
	long := ok
	long.WarmupSteps = 100
	require.NoError(t, CheckTrainRequest(long), "warm-up may outlast the run")
	cases := map[string]func(r *sdk.TrainRequest){
		"examples":        func(r *sdk.TrainRequest) { r.Examples = nil },
		"steps":           func(r *sdk.TrainRequest) { r.Steps = 0 },
		"batch_size":      func(r *sdk.TrainRequest) { r.BatchSize = 0 },
		"learning_rate":   func(r *sdk.TrainRequest) { r.LearningRate = math.NaN() },
		"weight_decay":    func(r *sdk.TrainRequest) { r.WeightDecay = -0.1 },
		"warmup_steps":    func(r *sdk.TrainRequest) { r.WarmupSteps = -1 },
		"label_smoothing": func(r *sdk.TrainRequest) { r.LabelSmoothing = 1 },
		"mask_rate":       func(r *sdk.TrainRequest) { r.MaskRate = -0.5 },
		"eval_every":      func(r *sdk.TrainRequest) { r.EvalEvery = -1 },
		"target_prob":     func(r *sdk.TrainRequest) { r.TargetProb = 1.5 },
	}
	for field, edit := range cases {
		r := ok
		edit(&r)
		err := CheckTrainRequest(r)
		assert.ErrorIs(t, err, sdk.ErrInvalidInput, field)
		assert.ErrorContains(t, err, field)
	}
}

func TestTrainingCommitAndRollback(t *testing.T) {
	s := NewScope()
	w := s.Keep(s.FromFloat32([]float32{1, 2, 3, 4}, 2, 2))
	require.NoError(t, s.Err())
	s.Close()
	st := NewStore(map[string]*ts.Tensor{"w": w})
	defer st.Close()
	requiresGrad := func() bool {
		rg, err := st.Get("w").RequiresGrad()
		require.NoError(t, err)
		return rg
	}
	step := func(tr *Training) {
		opt, err := NewAdamW(tr.Params(), DefaultAdamW(0))
		require.NoError(t, err)
		defer opt.Close()
		setGrads(t, opt, tr.Params(), map[string][]float32{"w": {1, 1, 1, 1}})
		require.NoError(t, opt.Step(0.5))
	}

	tr, err := st.BeginTraining()
	require.NoError(t, err)
	assert.True(t, requiresGrad())
	_, err = st.BeginTraining()
	assert.Error(t, err, "one training at a time")
	step(tr)
	tr.Rollback()
	assert.False(t, requiresGrad())
	assert.Equal(t, []float32{1, 2, 3, 4}, values(t, st.Get("w")), "rollback restores the weights bit for bit")

	tr, err = st.BeginTraining()
	require.NoError(t, err)
	step(tr)
	require.NoError(t, tr.Commit())
	tr.Rollback() // no-op after Commit
	assert.False(t, requiresGrad(), "trained weights do not require grad")
	g, err := st.Get("w").Grad(false)
	require.NoError(t, err)
	defined, err := g.Defined()
	require.NoError(t, err)
	_ = g.Drop()
	assert.False(t, defined, "no gradient buffer left behind")
	assert.InDeltaSlice(t, []float32{0.5, 1.5, 2.5, 3.5}, values(t, st.Get("w")), 1e-6)

	s = NewScope()
	id, err := st.Replace("w", s.Keep(s.FromFloat32([]float32{0, 0, 0, 0}, 2, 2)))
	s.Close()
	require.NoError(t, err)
	_, err = st.BeginTraining()
	assert.ErrorIs(t, err, sdk.ErrInvalidInput, "no training with edits pending")
	require.NoError(t, st.Undo(id))
	require.NoError(t, st.ApplyNoise(func(string) bool { return true }, func(_ string, t, _ *ts.Tensor) (*ts.Tensor, error) {
		s := NewScope()
		defer s.Close()
		return s.Keep(s.Clone(t)), s.Err()
	}))
	_, err = st.BeginTraining()
	assert.ErrorIs(t, err, sdk.ErrInvalidInput, "no training under noise")
	st.RemoveNoise()
}

// The element-wise passes may run on several goroutines; they touch
// distinct parameters, so the result is the same bit for bit.
func TestAdamWWorkersDoNotChangeTheResult(t *testing.T) {
	run := func(workers int) map[string][]float32 {
		rng := rand.New(rand.NewPCG(5, 6))
		vals := map[string][]float32{}
		shapes := map[string][]int64{}
		for i, n := range []int{300, 7, 1000, 64} {
			name := fmt.Sprintf("p%d", i)
			v := make([]float32, n)
			for j := range v {
				v[j] = float32(rng.NormFloat64())
			}
			vals[name], shapes[name] = v, []int64{int64(n)}
			if n%2 == 0 {
				shapes[name] = []int64{2, int64(n / 2)}
			}
		}
		params := leaves(t, vals, shapes)
		opt, err := NewAdamW(params, DefaultAdamW(0.1))
		require.NoError(t, err)
		defer opt.Close()
		opt.workers = workers
		for step := 0; step < 4; step++ {
			grads := map[string][]float32{}
			for _, name := range sortedNames(params) { // map order is random
				g := make([]float32, len(vals[name]))
				for j := range g {
					g[j] = float32(rng.NormFloat64())
				}
				grads[name] = g
			}
			setGrads(t, opt, params, grads)
			_, err := opt.ClipGradNorm(1)
			require.NoError(t, err)
			require.NoError(t, opt.Step(1e-2))
		}
		out := map[string][]float32{}
		for name, p := range params {
			out[name] = values(t, p)
		}
		return out
	}
	assert.Equal(t, run(1), run(3))
}
