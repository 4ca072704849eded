package torch

import (
	"fmt"

	"github.com/sugarme/gotch/ts"

	"github.com/knctl/knctl/sdk"
)

// ReplaceRow returns a [B,S,F] with row i of dim 1 replaced by row [B,F]
// or [1,F] (broadcast over the batch).
func ReplaceRow(s *Scope, a *ts.Tensor, i int, row *ts.Tensor) *ts.Tensor {
	sz := s.Shape(a)
	if sz == nil {
		return nil
	}
	n := sz[1]
	r := s.Unsqueeze(row, 1)
	rsz := s.Shape(r)
	if rsz == nil {
		return nil
	}
	if rsz[0] != sz[0] {
		r = s.Expand(r, sz[0], 1, sz[2])
	}
	return s.Cat(1, s.Narrow(a, 1, 0, int64(i)), r, s.Narrow(a, 1, int64(i)+1, n-int64(i)-1))
}

// CheckInterventions validates interventions against a model's layer count
// and FFN width.
func CheckInterventions(ivs []sdk.Intervention, layers, width int) error {
	for _, iv := range ivs {
		if iv.Layer < 0 || iv.Layer >= layers {
			return sdk.InvalidInputf("intervention on neuron %d:%d: layer out of range; the model has layers 0..%d", iv.Layer, iv.Neuron, layers-1)
		}
		if iv.Neuron < 0 || iv.Neuron >= width {
			return sdk.InvalidInputf("intervention on neuron %d:%d: index out of range; the FFN has neurons 0..%d", iv.Layer, iv.Neuron, width-1)
		}
		if iv.Op != sdk.OpSet && iv.Op != sdk.OpScale {
			return sdk.InvalidInputf("intervention on neuron %d:%d: op %q; expected %q or %q", iv.Layer, iv.Neuron, iv.Op, sdk.OpSet, sdk.OpScale)
		}
		if _, err := sdk.ParseHook(string(iv.Hook)); err != nil {
			return fmt.Errorf("intervention on neuron %d:%d: %w", iv.Layer, iv.Neuron, err)
		}
	}
	return nil
}

// InterventionHook returns the FFN activation of a layer from its
// pre-activation a [B,S,F], applying the interventions of that layer at the
// given positions: pre-hook ones before the activation function, post-hook
// ones after it.
func InterventionHook(s *Scope, act Activation, pre *ts.Tensor, positions []int, ivs []sdk.Intervention) *ts.Tensor {
	var preIvs, postIvs []sdk.Intervention
	for _, iv := range ivs {
		if iv.Hook == sdk.HookPre {
			preIvs = append(preIvs, iv)
		} else {
			postIvs = append(postIvs, iv)
		}
	}
	pre = applyAt(s, pre, positions, preIvs)
	return applyAt(s, act(s, pre), positions, postIvs)
}

func applyAt(s *Scope, a *ts.Tensor, positions []int, ivs []sdk.Intervention) *ts.Tensor {
	if len(ivs) == 0 {
		return a
	}
	sz := s.Shape(a)
	if sz == nil {
		return nil
	}
	for _, p := range positions {
		row := s.Float32s(s.Narrow(a, 1, int64(p), 1)) // [B,1,F] flattened
		if row == nil {
			return nil
		}
		f := int(sz[2])
		for b := 0; b < int(sz[0]); b++ {
			for _, iv := range ivs {
				i := b*f + iv.Neuron
				if iv.Op == sdk.OpSet {
					row[i] = iv.Value
				} else {
					row[i] *= iv.Value
				}
			}
		}
		a = ReplaceRow(s, a, p, s.FromFloat32(row, sz[0], sz[2]))
	}
	return a
}
