package torch

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/knctl/knctl/sdk"
)

func TestColumnsAndWithColumns(t *testing.T) {
	s := NewScope()
	defer s.Close()
	// w = [[0 1 2 3] [4 5 6 7] [8 9 10 11]]: 3 rows, 4 columns.
	vals := make([]float32, 12)
	for i := range vals {
		vals[i] = float32(i)
	}
	w := s.FromFloat32(vals, 3, 4)
	cols, err := Columns(w, []int{3, 0}, "neuron")
	require.NoError(t, err)
	assert.Equal(t, [][]float32{{3, 7, 11}, {0, 4, 8}}, cols)

	edited, err := WithColumns(w, []int{1, 3}, [][]float32{{-1, -2, -3}, {-4, -5, -6}}, "neuron")
	require.NoError(t, err)
	defer edited.Drop()
	assert.Equal(t, []float32{0, -1, 2, -4, 4, -2, 6, -5, 8, -3, 10, -6}, s.Float32s(edited))
	assert.Equal(t, vals, s.Float32s(w), "the original is not written to")

	_, err = Columns(w, []int{4}, "neuron")
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
	_, err = WithColumns(w, []int{0}, [][]float32{{1, 2}}, "neuron")
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
	_, err = WithColumns(w, []int{0, 0}, [][]float32{{1, 2, 3}, {1, 2, 3}}, "neuron")
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
	_, err = WithColumns(w, nil, nil, "neuron")
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
	require.NoError(t, s.Err())
}

func TestReplaceRows(t *testing.T) {
	s := NewScope()
	defer s.Close()
	a := s.Zeros(2, 4, 1)                           // [B=2, S=4, F=1]
	rows := s.FromFloat32([]float32{1, 2}, 1, 2, 1) // broadcast over the batch
	got := s.Float32s(ReplaceRows(s, a, 2, rows))   // the last two rows
	assert.Equal(t, []float32{0, 0, 1, 2, 0, 0, 1, 2}, got)
	first := s.Float32s(ReplaceRows(s, a, 0, s.FromFloat32([]float32{5, 6}, 2, 1, 1)))
	assert.Equal(t, []float32{5, 0, 0, 0, 6, 0, 0, 0}, first)
	require.NoError(t, s.Err())
}
