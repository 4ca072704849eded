package torch

import (
	"math"

	"github.com/sugarme/gotch/ts"

	"github.com/knctl/knctl/sdk"
)

// Activation is an FFN activation function.
type Activation func(s *Scope, x *ts.Tensor) *ts.Tensor

// ActivationByName returns the function HuggingFace's ACT2FN maps name to.
func ActivationByName(name string) (Activation, error) {
	switch name {
	case "gelu_new", "gelu_pytorch_tanh":
		return geluTanh, nil
	case "gelu":
		return geluErf, nil
	case "gelu_fast":
		return geluFast, nil
	case "quick_gelu":
		return func(s *Scope, x *ts.Tensor) *ts.Tensor { return s.Mul(x, s.Sigmoid(s.Scale(x, 1.702))) }, nil
	case "relu":
		return func(s *Scope, x *ts.Tensor) *ts.Tensor { return s.Relu(x) }, nil
	case "silu", "swish":
		return func(s *Scope, x *ts.Tensor) *ts.Tensor { return s.Mul(x, s.Sigmoid(x)) }, nil
	}
	return nil, sdk.InvalidInputf("activation function %q: not supported (supported: gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, quick_gelu, relu, silu)", name)
}

// geluTanh is GPT-2's tanh approximation:
// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
func geluTanh(s *Scope, x *ts.Tensor) *ts.Tensor {
	inner := s.Scale(s.Add(x, s.Scale(s.Pow(x, 3), 0.044715)), math.Sqrt(2/math.Pi))
	return s.Mul(s.Scale(x, 0.5), s.Shift(s.Tanh(inner), 1))
}

// geluErf is the exact GELU: 0.5 x (1 + erf(x / sqrt 2)).
func geluErf(s *Scope, x *ts.Tensor) *ts.Tensor {
	return s.Mul(s.Scale(x, 0.5), s.Shift(s.Erf(s.Scale(x, 1/math.Sqrt2)), 1))
}

// geluFast is 0.5 x (1 + tanh(0.7978845608 x (1 + 0.044715 x^2))).
func geluFast(s *Scope, x *ts.Tensor) *ts.Tensor {
	inner := s.Mul(s.Scale(x, 0.7978845608), s.Shift(s.Scale(s.Mul(x, x), 0.044715), 1))
	return s.Mul(s.Scale(x, 0.5), s.Shift(s.Tanh(inner), 1))
}
