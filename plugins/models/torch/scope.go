package torch

import (
	"fmt"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// Scope owns the tensors created through it and drops them in Close, except
// those handed out with Keep. It also carries the first error: after an op
// fails every later op returns nil without calling libtorch, so numerical
// code reads straight and checks Err once.
type Scope struct {
	err  error
	live []*ts.Tensor
}

// NewScope returns an empty scope.
func NewScope() *Scope { return &Scope{} }

// Err is the first error of any op in the scope.
func (s *Scope) Err() error { return s.err }

// Fail records err (the first one wins) and returns it.
func (s *Scope) Fail(err error) error {
	if s.err == nil {
		s.err = err
	}
	return s.err
}

// Close drops every tensor the scope still owns.
func (s *Scope) Close() {
	for _, t := range s.live {
		if t != nil {
			_ = t.Drop()
		}
	}
	s.live = nil
}

// Keep hands t over to the caller, who must drop it.
func (s *Scope) Keep(t *ts.Tensor) *ts.Tensor {
	for i := len(s.live) - 1; i >= 0; i-- {
		if s.live[i] == t {
			s.live[i] = s.live[len(s.live)-1]
			s.live = s.live[:len(s.live)-1]
			break
		}
	}
	return t
}

// Own makes the scope responsible for dropping t.
func (s *Scope) Own(t *ts.Tensor) *ts.Tensor {
	if t != nil {
		s.live = append(s.live, t)
	}
	return t
}

func (s *Scope) track(op string, t *ts.Tensor, err error) *ts.Tensor {
	if err != nil {
		s.Fail(fmt.Errorf("%s: %w", op, err))
		if t != nil {
			_ = t.Drop()
		}
		return nil
	}
	return s.Own(t)
}

func (s *Scope) ok(ts ...*ts.Tensor) bool {
	if s.err != nil {
		return false
	}
	for _, t := range ts {
		if t == nil {
			s.Fail(fmt.Errorf("internal error: nil tensor operand"))
			return false
		}
	}
	return true
}

// FromFloat32 builds a float tensor of the given shape.
func (s *Scope) FromFloat32(v []float32, shape ...int64) *ts.Tensor {
	if s.err != nil {
		return nil
	}
	t, err := ts.OfSlice(v)
	if err != nil {
		return s.track("tensor from []float32", nil, err)
	}
	r, err := t.View(shape, true)
	return s.track("view", r, err)
}

// FromInt64 builds an int64 tensor of the given shape.
func (s *Scope) FromInt64(v []int64, shape ...int64) *ts.Tensor {
	if s.err != nil {
		return nil
	}
	t, err := ts.OfSlice(v)
	if err != nil {
		return s.track("tensor from []int64", nil, err)
	}
	r, err := t.View(shape, true)
	return s.track("view", r, err)
}

// Float32s reads a float tensor's values (any layout).
func (s *Scope) Float32s(t *ts.Tensor) []float32 {
	if !s.ok(t) {
		return nil
	}
	c, err := t.Totype(gotch.Float, false)
	if err != nil {
		s.Fail(fmt.Errorf("read tensor: %w", err))
		return nil
	}
	defer c.Drop()
	c2, err := c.Contiguous(false)
	if err != nil {
		s.Fail(fmt.Errorf("read tensor: %w", err))
		return nil
	}
	defer c2.Drop()
	out := make([]float32, c2.Numel())
	if len(out) == 0 {
		return out
	}
	if err := c2.CopyData(out, uint(len(out))); err != nil {
		s.Fail(fmt.Errorf("read tensor: %w", err))
		return nil
	}
	return out
}

// Int64s reads an integer tensor's values.
func (s *Scope) Int64s(t *ts.Tensor) []int64 {
	if !s.ok(t) {
		return nil
	}
	c, err := t.Totype(gotch.Int64, false)
	if err != nil {
		s.Fail(fmt.Errorf("read tensor: %w", err))
		return nil
	}
	defer c.Drop()
	c2, err := c.Contiguous(false)
	if err != nil {
		s.Fail(fmt.Errorf("read tensor: %w", err))
		return nil
	}
	defer c2.Drop()
	out := make([]int64, c2.Numel())
	if len(out) == 0 {
		return out
	}
	if err := c2.CopyData(out, uint(len(out))); err != nil {
		s.Fail(fmt.Errorf("read tensor: %w", err))
		return nil
	}
	return out
}

// Shape returns t's sizes.
func (s *Scope) Shape(t *ts.Tensor) []int64 {
	if !s.ok(t) {
		return nil
	}
	sz, err := t.Size()
	if err != nil {
		s.Fail(fmt.Errorf("size: %w", err))
		return nil
	}
	return sz
}

// Zeros returns a float tensor of zeros.
func (s *Scope) Zeros(shape ...int64) *ts.Tensor {
	if s.err != nil {
		return nil
	}
	t, err := ts.Zeros(shape, gotch.Float, gotch.CPU)
	return s.track("zeros", t, err)
}

// Randn returns standard normal samples from libtorch's global generator.
func (s *Scope) Randn(shape ...int64) *ts.Tensor {
	if s.err != nil {
		return nil
	}
	t, err := ts.Randn(shape, gotch.Float, gotch.CPU)
	return s.track("randn", t, err)
}

// Matmul is a @ b with broadcasting.
func (s *Scope) Matmul(a, b *ts.Tensor) *ts.Tensor {
	if !s.ok(a, b) {
		return nil
	}
	t, err := a.Matmul(b, false)
	return s.track("matmul", t, err)
}

// Add is a + b with broadcasting.
func (s *Scope) Add(a, b *ts.Tensor) *ts.Tensor {
	if !s.ok(a, b) {
		return nil
	}
	t, err := a.Add(b, false)
	return s.track("add", t, err)
}

// Sub is a - b with broadcasting.
func (s *Scope) Sub(a, b *ts.Tensor) *ts.Tensor {
	if !s.ok(a, b) {
		return nil
	}
	t, err := a.Sub(b, false)
	return s.track("sub", t, err)
}

// Mul is a * b elementwise with broadcasting.
func (s *Scope) Mul(a, b *ts.Tensor) *ts.Tensor {
	if !s.ok(a, b) {
		return nil
	}
	t, err := a.Mul(b, false)
	return s.track("mul", t, err)
}

// Scale is a * c.
func (s *Scope) Scale(a *ts.Tensor, c float64) *ts.Tensor {
	if !s.ok(a) {
		return nil
	}
	sc := ts.FloatScalar(c)
	defer sc.MustDrop()
	t, err := a.MulScalar(sc, false)
	return s.track("mul scalar", t, err)
}

// Shift is a + c.
func (s *Scope) Shift(a *ts.Tensor, c float64) *ts.Tensor {
	if !s.ok(a) {
		return nil
	}
	sc := ts.FloatScalar(c)
	defer sc.MustDrop()
	t, err := a.AddScalar(sc, false)
	return s.track("add scalar", t, err)
}

// Pow is a ** p.
func (s *Scope) Pow(a *ts.Tensor, p float64) *ts.Tensor {
	if !s.ok(a) {
		return nil
	}
	sc := ts.FloatScalar(p)
	defer sc.MustDrop()
	t, err := a.PowTensorScalar(sc, false)
	return s.track("pow", t, err)
}

// LayerNorm normalises the last dimension.
func (s *Scope) LayerNorm(x, w, b *ts.Tensor, eps float64) *ts.Tensor {
	if !s.ok(x, w, b) {
		return nil
	}
	sz := s.Shape(x)
	if sz == nil {
		return nil
	}
	t, err := ts.LayerNorm(x, []int64{sz[len(sz)-1]}, w, b, eps, false)
	return s.track("layer norm", t, err)
}

// Tanh is tanh(a).
func (s *Scope) Tanh(a *ts.Tensor) *ts.Tensor {
	if !s.ok(a) {
		return nil
	}
	t, err := a.Tanh(false)
	return s.track("tanh", t, err)
}

// Erf is erf(a).
func (s *Scope) Erf(a *ts.Tensor) *ts.Tensor {
	if !s.ok(a) {
		return nil
	}
	t, err := a.Erf(false)
	return s.track("erf", t, err)
}

// Sigmoid is the logistic function.
func (s *Scope) Sigmoid(a *ts.Tensor) *ts.Tensor {
	if !s.ok(a) {
		return nil
	}
	t, err := a.Sigmoid(false)
	return s.track("sigmoid", t, err)
}

// Relu is max(a, 0).
func (s *Scope) Relu(a *ts.Tensor) *ts.Tensor {
	if !s.ok(a) {
		return nil
	}
	t, err := a.Relu(false)
	return s.track("relu", t, err)
}

// Softmax over dim.
func (s *Scope) Softmax(a *ts.Tensor, dim int64) *ts.Tensor {
	if !s.ok(a) {
		return nil
	}
	t, err := a.Softmax(dim, gotch.Float, false)
	return s.track("softmax", t, err)
}

// LogSoftmax over dim.
func (s *Scope) LogSoftmax(a *ts.Tensor, dim int64) *ts.Tensor {
	if !s.ok(a) {
		return nil
	}
	t, err := a.LogSoftmax(dim, gotch.Float, false)
	return s.track("log softmax", t, err)
}

// Exp is e**a.
func (s *Scope) Exp(a *ts.Tensor) *ts.Tensor {
	if !s.ok(a) {
		return nil
	}
	t, err := a.Exp(false)
	return s.track("exp", t, err)
}

// Narrow is a view of length elements of dim from start.
func (s *Scope) Narrow(a *ts.Tensor, dim, start, length int64) *ts.Tensor {
	if !s.ok(a) {
		return nil
	}
	t, err := a.Narrow(dim, start, length, false)
	return s.track("narrow", t, err)
}

// Cat concatenates along dim.
func (s *Scope) Cat(dim int64, parts ...*ts.Tensor) *ts.Tensor {
	if !s.ok(parts...) {
		return nil
	}
	vals := make([]ts.Tensor, len(parts))
	for i, p := range parts {
		vals[i] = *p
	}
	t, err := ts.Cat(vals, dim)
	return s.track("cat", t, err)
}

// Reshape to shape (-1 infers one dimension).
func (s *Scope) Reshape(a *ts.Tensor, shape ...int64) *ts.Tensor {
	if !s.ok(a) {
		return nil
	}
	t, err := a.Reshape(shape, false)
	return s.track("reshape", t, err)
}

// Permute reorders dimensions.
func (s *Scope) Permute(a *ts.Tensor, dims ...int64) *ts.Tensor {
	if !s.ok(a) {
		return nil
	}
	t, err := a.Permute(dims, false)
	return s.track("permute", t, err)
}

// Transpose swaps two dimensions.
func (s *Scope) Transpose(a *ts.Tensor, d0, d1 int64) *ts.Tensor {
	if !s.ok(a) {
		return nil
	}
	t, err := a.Transpose(d0, d1, false)
	return s.track("transpose", t, err)
}

// Contiguous returns a contiguous copy when a is not.
func (s *Scope) Contiguous(a *ts.Tensor) *ts.Tensor {
	if !s.ok(a) {
		return nil
	}
	t, err := a.Contiguous(false)
	return s.track("contiguous", t, err)
}

// Expand broadcasts a to shape without copying (-1 keeps a dimension).
func (s *Scope) Expand(a *ts.Tensor, shape ...int64) *ts.Tensor {
	if !s.ok(a) {
		return nil
	}
	t, err := a.Expand(shape, false, false)
	return s.track("expand", t, err)
}

// MaskedFill sets a's entries where mask is true to v.
func (s *Scope) MaskedFill(a, mask *ts.Tensor, v float64) *ts.Tensor {
	if !s.ok(a, mask) {
		return nil
	}
	sc := ts.FloatScalar(v)
	defer sc.MustDrop()
	t, err := a.MaskedFill(mask, sc, false)
	return s.track("masked fill", t, err)
}

// IndexSelect gathers slices of a along dim at idx (an int64 tensor).
func (s *Scope) IndexSelect(a *ts.Tensor, dim int64, idx *ts.Tensor) *ts.Tensor {
	if !s.ok(a, idx) {
		return nil
	}
	t, err := a.IndexSelect(dim, idx, false)
	return s.track("index select", t, err)
}

// Gather picks a[..., idx[...]] along dim.
func (s *Scope) Gather(a *ts.Tensor, dim int64, idx *ts.Tensor) *ts.Tensor {
	if !s.ok(a, idx) {
		return nil
	}
	t, err := a.Gather(dim, idx, false, false)
	return s.track("gather", t, err)
}

// IndexCopy returns a copy of a with slices along dim at idx replaced by src.
func (s *Scope) IndexCopy(a *ts.Tensor, dim int64, idx, src *ts.Tensor) *ts.Tensor {
	if !s.ok(a, idx, src) {
		return nil
	}
	t, err := a.IndexCopy(dim, idx, src, false)
	return s.track("index copy", t, err)
}

// Sum of all elements.
func (s *Scope) Sum(a *ts.Tensor) *ts.Tensor {
	if !s.ok(a) {
		return nil
	}
	t, err := a.Sum(gotch.Float, false)
	return s.track("sum", t, err)
}

// SumDim sums over dims.
func (s *Scope) SumDim(a *ts.Tensor, keep bool, dims ...int64) *ts.Tensor {
	if !s.ok(a) {
		return nil
	}
	t, err := a.SumDimIntlist(dims, keep, gotch.Float, false)
	return s.track("sum", t, err)
}

// Unsqueeze inserts a dimension of size 1.
func (s *Scope) Unsqueeze(a *ts.Tensor, dim int64) *ts.Tensor {
	if !s.ok(a) {
		return nil
	}
	t, err := a.Unsqueeze(dim, false)
	return s.track("unsqueeze", t, err)
}

// Leaf returns a detached copy of a that requires grad: the input of a
// backward pass.
func (s *Scope) Leaf(a *ts.Tensor) *ts.Tensor {
	if !s.ok(a) {
		return nil
	}
	d, err := a.Detach(false)
	if err != nil {
		return s.track("detach", nil, err)
	}
	c, err := d.Contiguous(true)
	if err != nil {
		return s.track("contiguous", nil, err)
	}
	t, err := c.SetRequiresGrad(true, true)
	return s.track("requires grad", t, err)
}

// Grad returns d(sum of out)/d(in) for a scalar out and one leaf in.
func (s *Scope) Grad(out, in *ts.Tensor) *ts.Tensor {
	if !s.ok(out, in) {
		return nil
	}
	// gotch v0.7.0's RunBackward supports exactly one input (two segfault).
	gs, err := ts.RunBackward([]ts.Tensor{*out}, []ts.Tensor{*in}, false, false)
	if err != nil {
		return s.track("backward", nil, err)
	}
	g := gs[0]
	return s.Own(&g)
}

// Topk returns the k largest values and their indices along the last dim.
func (s *Scope) Topk(a *ts.Tensor, k int64) (vals, idx *ts.Tensor) {
	if !s.ok(a) {
		return nil, nil
	}
	v, i, err := a.Topk(k, -1, true, true, false)
	if err != nil {
		s.Fail(fmt.Errorf("topk: %w", err))
		return nil, nil
	}
	return s.Own(v), s.Own(i)
}

// Clone returns a copy with its own storage.
func (s *Scope) Clone(a *ts.Tensor) *ts.Tensor {
	if !s.ok(a) {
		return nil
	}
	d, err := a.Detach(false)
	if err != nil {
		return s.track("detach", nil, err)
	}
	sc := ts.FloatScalar(1)
	defer sc.MustDrop()
	// Multiplying by one allocates fresh storage bit-identical to a.
	t, err := d.MulScalar(sc, true)
	return s.track("clone", t, err)
}
