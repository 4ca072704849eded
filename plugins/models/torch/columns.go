package torch

import (
	"github.com/sugarme/gotch/ts"

	"github.com/knctl/knctl/sdk"
)

// Columns reads columns idx of a 2-D weight w, each as one slice: the
// counterpart of Rows for torch.nn.Linear's [out, in] layout, where the
// vector an input unit adds to the output is a column. what names an index
// in errors.
func Columns(w *ts.Tensor, idx []int, what string) ([][]float32, error) {
	s := NewScope()
	defer s.Close()
	sz := s.Shape(w)
	if sz == nil {
		return nil, s.Err()
	}
	if err := checkIndex(idx, int(sz[1]), what); err != nil {
		return nil, err
	}
	if len(idx) == 0 {
		return [][]float32{}, nil
	}
	ix := make([]int64, len(idx))
	for i, v := range idx {
		ix[i] = int64(v)
	}
	// [rows, n] -> [n, rows], so that each selected column is contiguous.
	flat := s.Float32s(s.Transpose(s.IndexSelect(w, 1, s.FromInt64(ix, int64(len(ix)))), 0, 1))
	if err := s.Err(); err != nil {
		return nil, err
	}
	rows := int(sz[0])
	out := make([][]float32, len(idx))
	for i := range out {
		out[i] = flat[i*rows : (i+1)*rows : (i+1)*rows]
	}
	return out, nil
}

// WithColumns returns a copy of the 2-D weight w with columns idx set to
// values (each of w's row count). Every other entry is copied bit for bit.
// The caller owns the result.
func WithColumns(w *ts.Tensor, idx []int, values [][]float32, what string) (*ts.Tensor, error) {
	s := NewScope()
	defer s.Close()
	sz := s.Shape(w)
	if sz == nil {
		return nil, s.Err()
	}
	if err := checkIndex(idx, int(sz[1]), what); err != nil {
		return nil, err
	}
	if len(idx) == 0 {
		return nil, sdk.InvalidInputf("value slots: no %ss given", what)
	}
	if len(values) != len(idx) {
		return nil, sdk.InvalidInputf("value slots: %d vectors for %d %ss", len(values), len(idx), what)
	}
	seen := map[int]bool{}
	flat := make([]float32, 0, len(idx)*int(sz[0]))
	ix := make([]int64, len(idx))
	for i, v := range values {
		if len(v) != int(sz[0]) {
			return nil, sdk.InvalidInputf("value slot for %s %d: %d values; expected %d (the hidden size)", what, idx[i], len(v), sz[0])
		}
		if seen[idx[i]] {
			return nil, sdk.InvalidInputf("value slots: %s %d given twice", what, idx[i])
		}
		seen[idx[i]] = true
		flat = append(flat, v...)
		ix[i] = int64(idx[i])
	}
	// The values arrive one vector per column: [n, rows]; index_copy along
	// dim 1 wants [rows, n].
	src := s.Contiguous(s.Transpose(s.FromFloat32(flat, int64(len(idx)), sz[0]), 0, 1))
	t := s.IndexCopy(w, 1, s.FromInt64(ix, int64(len(ix))), src)
	if err := s.Err(); err != nil {
		return nil, err
	}
	return s.Keep(t), nil
}

// ReplaceRows returns a [B,S,F] with rows start..start+n-1 of dim 1
// replaced by rows [B,n,F] or [1,n,F] (broadcast over the batch): the
// multi-position form of ReplaceRow.
func ReplaceRows(s *Scope, a *ts.Tensor, start int, rows *ts.Tensor) *ts.Tensor {
	sz, rsz := s.Shape(a), s.Shape(rows)
	if sz == nil || rsz == nil {
		return nil
	}
	n := rsz[1]
	if rsz[0] != sz[0] {
		rows = s.Expand(rows, sz[0], n, sz[2])
	}
	parts := []*ts.Tensor{}
	if start > 0 {
		parts = append(parts, s.Narrow(a, 1, 0, int64(start)))
	}
	parts = append(parts, rows)
	if rest := sz[1] - int64(start) - n; rest > 0 {
		parts = append(parts, s.Narrow(a, 1, int64(start)+n, rest))
	}
	return s.Cat(1, parts...)
}
