package torch

import (
	"errors"
	"fmt"
	"sort"

	"github.com/sugarme/gotch/ts"

	"github.com/knctl/knctl/sdk"
)

// Store holds a model's parameters by name and makes weight changes
// reversible bit for bit: an edit or noise never writes into a tensor in
// place, it swaps in a new tensor and keeps the old one until undone.
type Store struct {
	params map[string]*ts.Tensor
	names  []string

	// noisy holds the original tensors of the parameters noise replaced.
	noisy map[string]*ts.Tensor
	// scratch keeps the noisy tensors after RemoveNoise for the next
	// ApplyNoise to write into: NoiseGrad draws noise N times per fact,
	// and fresh allocations of the model's size cost as much again as
	// drawing the noise (page faults).
	scratch map[string]*ts.Tensor
	// edits holds, per edit id, the tensors an edit replaced.
	edits  map[sdk.EditID]edit
	nextID sdk.EditID
}

type edit struct {
	name string
	prev *ts.Tensor
}

// NewStore takes ownership of params.
func NewStore(params map[string]*ts.Tensor) *Store {
	names := make([]string, 0, len(params))
	for n := range params {
		names = append(names, n)
	}
	sort.Strings(names)
	return &Store{params: params, names: names, edits: map[sdk.EditID]edit{}, nextID: 1}
}

// Get returns a parameter; it panics on an unknown name, which is a bug in
// the backend, never a user error.
func (s *Store) Get(name string) *ts.Tensor {
	t, ok := s.params[name]
	if !ok {
		panic("torch.Store: unknown parameter " + name)
	}
	return t
}

// Names lists the parameters in a fixed (sorted) order.
func (s *Store) Names() []string { return s.names }

// Count is the number of scalar parameters.
func (s *Store) Count() int64 {
	var n int64
	for _, t := range s.params {
		n += int64(t.Numel())
	}
	return n
}

// Noisy reports whether noise is applied.
func (s *Store) Noisy() bool { return s.noisy != nil }

// Replace swaps in a new tensor for name as an undoable edit and returns
// its id. The store owns t afterwards.
func (s *Store) Replace(name string, t *ts.Tensor) (sdk.EditID, error) {
	if s.noisy != nil {
		return 0, sdk.InvalidInputf("weight edit while noise is applied: remove the noise first")
	}
	prev, ok := s.params[name]
	if !ok {
		return 0, fmt.Errorf("unknown parameter %s", name)
	}
	id := s.nextID
	s.nextID++
	s.params[name] = t
	s.edits[id] = edit{name: name, prev: prev}
	return id, nil
}

// Undo restores the tensor edit id replaced. Overlapping edits must be
// undone newest first; an older edit of the same parameter cannot be undone
// while a newer one is in place.
func (s *Store) Undo(id sdk.EditID) error {
	if s.noisy != nil {
		return sdk.InvalidInputf("undo edit %d while noise is applied: remove the noise first", id)
	}
	e, ok := s.edits[id]
	if !ok {
		return sdk.InvalidInputf("undo edit %d: no such edit (never made, or already undone)", id)
	}
	for other, o := range s.edits {
		if other > id && o.name == e.name {
			return sdk.InvalidInputf("undo edit %d: edit %d changed the same weights later; undo it first", id, other)
		}
	}
	_ = s.params[e.name].Drop()
	s.params[e.name] = e.prev
	delete(s.edits, id)
	return nil
}

// ApplyNoise replaces the selected parameters by perturbed copies; perturb
// returns the new tensor for one parameter, written into scratch (a tensor
// of the parameter's shape) when that is not nil; perturb owns scratch and
// drops it when it fails. Parameters are visited in
// name order so a seeded generator gives the same noise every time.
func (s *Store) ApplyNoise(selected func(name string) bool, perturb func(name string, t, scratch *ts.Tensor) (*ts.Tensor, error)) error {
	s.RemoveNoise()
	noisy := map[string]*ts.Tensor{}
	var err error
	for _, name := range s.names {
		if !selected(name) {
			continue
		}
		scratch := s.scratch[name]
		delete(s.scratch, name)
		var t *ts.Tensor
		t, err = perturb(name, s.params[name], scratch)
		if err != nil {
			err = fmt.Errorf("noise on %s: %w", name, err)
			break
		}
		noisy[name] = s.params[name]
		s.params[name] = t
	}
	s.noisy = noisy
	if err != nil {
		s.RemoveNoise()
		return err
	}
	if len(noisy) == 0 {
		s.noisy = nil
		return errors.New("noise selected no parameters")
	}
	return nil
}

// RemoveNoise restores the original tensors, keeping the noisy ones as
// scratch space for the next ApplyNoise.
func (s *Store) RemoveNoise() {
	for name, orig := range s.noisy {
		if s.scratch == nil {
			s.scratch = map[string]*ts.Tensor{}
		}
		if old := s.scratch[name]; old != nil {
			_ = old.Drop()
		}
		s.scratch[name] = s.params[name]
		s.params[name] = orig
	}
	s.noisy = nil
}

// Close drops every tensor the store holds.
func (s *Store) Close() {
	s.RemoveNoise()
	DropAll(s.scratch)
	s.scratch = nil
	for id, e := range s.edits {
		_ = e.prev.Drop()
		delete(s.edits, id)
	}
	DropAll(s.params)
}
