package torch

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// float32View returns t's elements as a Go slice over t's own memory, so
// that element-wise updates (the optimizer's) run in Go without a libtorch
// call per operation: each gotch v0.7.0 call leaks a few dozen bytes, which
// over thousands of steps and hundreds of tensors adds up to hundreds of
// megabytes. t must be a contiguous float32 CPU tensor; the slice is valid
// while t is alive, and no libtorch op may use t while Go writes to it.
func float32View(t *ts.Tensor) ([]float32, error) {
	s := NewScope()
	defer s.Close()
	shape := s.Shape(t)
	if err := s.Err(); err != nil {
		return nil, err
	}
	n := 1
	for _, d := range shape {
		n *= int(d)
	}
	ptr, err := t.DataPtr()
	if err != nil {
		return nil, fmt.Errorf("data pointer: %w", err)
	}
	// contiguous() and to(float32) return t itself when it already is
	// both; anything else is a copy at another address.
	c := s.Contiguous(t)
	if c == nil {
		return nil, s.Err()
	}
	f, err := c.Totype(gotch.Float, false)
	if err != nil {
		return nil, fmt.Errorf("check layout: %w", err)
	}
	s.Own(f)
	same, err := f.DataPtr()
	if err != nil {
		return nil, fmt.Errorf("data pointer: %w", err)
	}
	if same != ptr {
		return nil, errors.New("not a contiguous float32 tensor")
	}
	if n == 0 {
		return []float32{}, nil
	}
	return unsafe.Slice((*float32)(ptr), n), nil
}
