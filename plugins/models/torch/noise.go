package torch

import (
	"fmt"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/knctl/knctl/sdk"
)

// ApplyNoise perturbs the selected parameters of st: w·e with e ~ N(1, σ²)
// (multiplicative, the default) or w+e with e ~ N(0, σ²) (additive), drawn
// from libtorch's generator seeded with spec.Seed, in parameter-name order.
//
// The noise is drawn in place into the scratch copy the store keeps from
// the previous sample and combined in place: NoiseGrad draws noise N times
// per fact, and every fresh allocation or extra pass over a
// 124M-parameter model costs about as much as drawing the noise
// (BenchmarkNoise in plugins/models/gpt2). libtorch's vectorized normal_
// outran a parallel Go generator on 2 cores.
func ApplyNoise(st *Store, spec sdk.NoiseSpec, selected func(string) bool) error {
	ManualSeed(spec.Seed)
	mean := 1.0
	if spec.Mode == sdk.NoiseAdditive {
		mean = 0
	}
	return st.ApplyNoise(selected, func(name string, w, scratch *ts.Tensor) (*ts.Tensor, error) {
		s := NewScope()
		defer s.Close()
		out := s.Own(scratch)
		if out == nil {
			shape := s.Shape(w)
			if err := s.Err(); err != nil {
				return nil, err
			}
			t, err := ts.Empty(shape, gotch.Float, gotch.CPU)
			if out = s.track("empty", t, err); out == nil {
				return nil, s.Err()
			}
		}
		if err := out.Normal_(mean, spec.Sigma); err != nil {
			return nil, fmt.Errorf("normal: %w", err)
		}
		combine := out.Mul_
		if spec.Mode == sdk.NoiseAdditive {
			combine = out.Add_
		}
		if err := combine(w); err != nil {
			return nil, fmt.Errorf("combine: %w", err)
		}
		return s.Keep(out), nil
	})
}
