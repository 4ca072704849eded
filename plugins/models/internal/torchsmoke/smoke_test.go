package torchsmoke

import (
	"math"
	"strings"
	"testing"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// The Go GC does not free libtorch tensors: every tensor a test creates is
// registered here and dropped when the test ends.
type pool struct {
	t    *testing.T
	live []*ts.Tensor
}

func newPool(t *testing.T) *pool {
	p := &pool{t: t}
	t.Cleanup(func() {
		for i := len(p.live) - 1; i >= 0; i-- {
			if err := p.live[i].Drop(); err != nil {
				t.Errorf("drop tensor %d: %v", i, err)
			}
		}
	})
	return p
}

// keep registers x for dropping; err comes from the non-Must gotch call.
func (p *pool) keep(x *ts.Tensor, err error) *ts.Tensor {
	p.t.Helper()
	if err != nil {
		p.t.Fatalf("gotch: %v", err)
	}
	p.live = append(p.live, x)
	return x
}

// matrix builds a float32 tensor of the given shape from row-major data.
func (p *pool) matrix(data []float32, shape ...int64) *ts.Tensor {
	p.t.Helper()
	flat, err := ts.OfSlice(data)
	if err != nil {
		p.t.Fatalf("OfSlice: %v", err)
	}
	// del=true drops the flat tensor once the reshaped one exists.
	return p.keep(flat.Reshape(shape, true))
}

func values(t *testing.T, x *ts.Tensor) []float32 {
	t.Helper()
	out := make([]float32, x.Numel())
	if err := x.CopyData(out, x.Numel()); err != nil {
		t.Fatalf("CopyData: %v", err)
	}
	return out
}

func near(t *testing.T, what string, got []float32, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d values %v, want %d %v", what, len(got), got, len(want), want)
	}
	for i := range want {
		if math.Abs(float64(got[i])-want[i]) > tol {
			t.Errorf("%s[%d] = %.7f, want %.7f", what, i, got[i], want[i])
		}
	}
}

// Exact GELU (what gotch's Gelu computes) and its derivative.
func gelu(x float64) float64 { return 0.5 * x * (1 + math.Erf(x/math.Sqrt2)) }
func dgelu(x float64) float64 {
	return 0.5*(1+math.Erf(x/math.Sqrt2)) + x*math.Exp(-x*x/2)/math.Sqrt(2*math.Pi)
}

func TestMatMulGeluBackward(t *testing.T) {
	p := newPool(t)

	// a = [[1 2] [3 4]], b = [[0.5 -1] [1 0.5]]  =>  a@b = [[2.5 0] [5.5 -1]].
	a0 := p.matrix([]float32{1, 2, 3, 4}, 2, 2)
	a := p.keep(a0.SetRequiresGrad(true, false)) // leaf that collects a gradient
	b := p.matrix([]float32{0.5, -1, 1, 0.5}, 2, 2)

	y := p.keep(a.Matmul(b, false))
	yWant := []float64{2.5, 0, 5.5, -1}
	near(t, "a@b", values(t, y), yWant, 1e-6)
	if got := y.MustSize(); len(got) != 2 || got[0] != 2 || got[1] != 2 {
		t.Fatalf("a@b shape = %v, want [2 2]", got)
	}

	g := p.keep(y.Gelu(false))
	gWant := make([]float64, 4)
	for i, v := range yWant {
		gWant[i] = gelu(v)
	}
	near(t, "gelu(a@b)", values(t, g), gWant, 1e-6)
	// Spot values: gelu(0) = 0, gelu(-1) = -Phi(1) = -0.1586553.
	near(t, "gelu spot", []float32{values(t, g)[1], values(t, g)[3]}, []float64{0, -0.1586553}, 1e-6)

	loss := p.keep(g.Sum(gotch.Float, false))
	near(t, "loss", values(t, loss), []float64{gWant[0] + gWant[1] + gWant[2] + gWant[3]}, 1e-5)

	// d loss / d y = gelu'(y), through RunBackward (one output, one input);
	// keepGraph so the leaf backward below can reuse the graph.
	dy, err := ts.RunBackward([]ts.Tensor{*loss}, []ts.Tensor{*y}, true, false)
	if err != nil {
		t.Fatalf("RunBackward: %v", err)
	}
	if len(dy) != 1 {
		t.Fatalf("RunBackward returned %d tensors, want 1", len(dy))
	}
	dyT := p.keep(&dy[0], nil)
	dyWant := make([]float64, 4)
	for i, v := range yWant {
		dyWant[i] = dgelu(v)
	}
	near(t, "dloss/dy", values(t, dyT), dyWant, 1e-5)

	// d loss / d a = gelu'(y) @ b^T, computed by hand:
	// row i: [G[i0]*b00 + G[i1]*b01, G[i0]*b10 + G[i1]*b11].
	if err := loss.Backward(); err != nil {
		t.Fatalf("Backward: %v", err)
	}
	ga := p.keep(a.Grad(false))
	bv := []float64{0.5, -1, 1, 0.5}
	daWant := []float64{
		dyWant[0]*bv[0] + dyWant[1]*bv[1], dyWant[0]*bv[2] + dyWant[1]*bv[3],
		dyWant[2]*bv[0] + dyWant[3]*bv[1], dyWant[2]*bv[2] + dyWant[3]*bv[3],
	}
	near(t, "dloss/da", values(t, ga), daWant, 1e-5)

	// b never required a gradient; a detached copy does not either.
	if rg := b.MustRequiresGrad(); rg {
		t.Errorf("b.RequiresGrad = true, want false")
	}
	d := p.keep(a.Detach(false))
	if rg := d.MustRequiresGrad(); rg {
		t.Errorf("a.Detach().RequiresGrad = true, want false")
	}
}

func TestSoftmaxTanhLayerNorm(t *testing.T) {
	p := newPool(t)
	x := p.matrix([]float32{1, 2, 3}, 1, 3)

	// Softmax over the last dim: e^i / (e + e^2 + e^3).
	sm := p.keep(x.Softmax(-1, gotch.Float, false))
	z := math.E + math.Exp(2) + math.Exp(3)
	near(t, "softmax", values(t, sm), []float64{math.E / z, math.Exp(2) / z, math.Exp(3) / z}, 1e-6)

	th := p.keep(x.Tanh(false))
	near(t, "tanh", values(t, th), []float64{math.Tanh(1), math.Tanh(2), math.Tanh(3)}, 1e-6)

	// LayerNorm of [1 2 3]: mean 2, biased variance 2/3, so (x-2)/sqrt(2/3+eps);
	// then * gamma + beta.
	gamma := p.matrix([]float32{1, 2, 0.5}, 3)
	beta := p.matrix([]float32{0, 1, -1}, 3)
	ln := p.keep(ts.LayerNorm(x, []int64{3}, gamma, beta, 1e-5, false))
	s := math.Sqrt(2.0/3.0 + 1e-5)
	near(t, "layer_norm", values(t, ln), []float64{-1 / s * 1, 0*2 + 1, 1/s*0.5 - 1}, 1e-5)

	// With grad mode off, results do not require gradients; GradSetEnabled
	// returns the previous mode (correct only with setup-gotch.sh's int-read fix).
	w := p.keep(x.SetRequiresGrad(true, false))
	prev, err := ts.GradSetEnabled(false)
	if err != nil {
		t.Fatalf("GradSetEnabled: %v", err)
	}
	ng := p.keep(w.Tanh(false))
	if _, err := ts.GradSetEnabled(prev); err != nil {
		t.Fatalf("GradSetEnabled(restore): %v", err)
	}
	if !prev {
		t.Errorf("GradSetEnabled(false) reported grad mode was off before; want on")
	}
	if ng.MustRequiresGrad() {
		t.Errorf("tanh computed with grad disabled requires grad")
	}
	ts.NoGrad(func() {
		if y := p.keep(w.Tanh(false)); y.MustRequiresGrad() {
			t.Errorf("tanh inside ts.NoGrad requires grad")
		}
	})
	if wg := p.keep(w.Tanh(false)); !wg.MustRequiresGrad() {
		t.Errorf("grad mode still off after ts.NoGrad / GradSetEnabled(prev)")
	}

	// Device() reads a C int too; gotch reports CPU as {CPU 1}, not gotch.CPU.
	if dev, err := x.Device(); err != nil || dev.Name != "CPU" {
		t.Errorf("Device() = %v, %v; want CPU", dev, err)
	}
}

// The compat header: a shimmed op still computes, a removed op becomes a Go error.
func TestCompatHeader(t *testing.T) {
	p := newPool(t)
	// solve(B, A) is routed to linalg's solver: A x = B with A = [[2 0] [0 4]], B = [[2] [8]] => x = [[1] [2]].
	A := p.matrix([]float32{2, 0, 0, 4}, 2, 2)
	B := p.matrix([]float32{2, 8}, 2, 1)
	x, lu, err := B.Solve(A, false)
	if err != nil {
		t.Fatalf("Solve: %v", err)
	}
	p.keep(x, nil)
	p.keep(lu, nil)
	near(t, "solve", values(t, x), []float64{1, 2}, 1e-6)

	// lstsq was removed in libtorch 1.13: the shim throws, gotch reports an error.
	_, _, err = B.Lstsq(A, false)
	if err == nil || !strings.Contains(err.Error(), "removed in libtorch 1.13") {
		t.Fatalf("Lstsq error = %v, want the compat header's removed-op error", err)
	}
}
