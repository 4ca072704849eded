package torch

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Label smoothing as torch defines it: (1-eps)·(-log p[label]) +
// eps·mean over the vocabulary of -log p, summed over rows.
func TestCrossEntropySumWithLabelSmoothing(t *testing.T) {
	logits := [][]float64{{1, 2, 3, 0.5}, {0, -1, 4, 2}, {0.25, 0.25, 0.25, 0.25}}
	labels := []int64{2, 0, 3}
	const eps = 0.1
	var want float64
	var flat []float32
	for i, row := range logits {
		var sum float64
		for _, z := range row {
			sum += math.Exp(z)
			flat = append(flat, float32(z))
		}
		lse := math.Log(sum)
		var smooth float64
		for _, z := range row {
			smooth += lse - z
		}
		want += (1-eps)*(lse-row[labels[i]]) + eps*smooth/float64(len(row))
	}
	s := NewScope()
	defer s.Close()
	got := s.Float32s(s.CrossEntropySum(s.FromFloat32(flat, 3, 4), s.FromInt64(labels, 3), eps))
	require.NoError(t, s.Err())
	assert.InDelta(t, want, float64(got[0]), 1e-5)
}
