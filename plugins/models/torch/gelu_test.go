package torch

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGeluFusedIsExactGelu(t *testing.T) {
	s := NewScope()
	defer s.Close()
	xs := []float32{-6, -2.5, -1, -0.1, 0, 0.3, 1, 2, 7}
	got := s.Float32s(GeluFused(s, s.FromFloat32(xs, int64(len(xs)))))
	composed, err := ActivationByName("gelu")
	require.NoError(t, err)
	ref := s.Float32s(composed(s, s.FromFloat32(xs, int64(len(xs)))))
	require.NoError(t, s.Err())
	for i, x := range xs {
		want := 0.5 * float64(x) * (1 + math.Erf(float64(x)/math.Sqrt2))
		assert.InDelta(t, want, got[i], 1e-6, "gelu(%g)", x)
		assert.InDelta(t, ref[i], got[i], 1e-6, "gelu(%g)", x)
	}
}
