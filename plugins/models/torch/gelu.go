package torch

import "github.com/sugarme/gotch/ts"

// Gelu is libtorch's fused exact GELU, 0.5 x (1 + erf(x / sqrt 2)): what
// torch.nn.functional.gelu (HuggingFace's "gelu") computes, in one op and
// one backward node instead of the five of a composed formula.
func (s *Scope) Gelu(a *ts.Tensor) *ts.Tensor {
	if !s.ok(a) {
		return nil
	}
	t, err := a.Gelu(false)
	return s.track("gelu", t, err)
}

// GeluFused is the exact GELU as an Activation, by libtorch's fused op.
func GeluFused(s *Scope, x *ts.Tensor) *ts.Tensor { return s.Gelu(x) }
