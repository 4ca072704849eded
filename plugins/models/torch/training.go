package torch

import (
	"fmt"

	"github.com/sugarme/gotch/ts"

	"github.com/knctl/knctl/sdk"
)

// Training is a Store whose parameters are, for the time being, leaves that
// require grad, so that a backward pass fills their gradients and an
// optimizer can update them in place. The original tensors are kept until
// Commit or Rollback, so a failed or cancelled run leaves the weights bit
// for bit as they were.
type Training struct {
	st     *Store
	orig   map[string]*ts.Tensor
	leaves map[string]*ts.Tensor
}

// Edits is the number of weight edits that can still be undone.
func (s *Store) Edits() int { return len(s.edits) }

// BeginTraining swaps every parameter of the store for a copy that is a
// leaf requiring grad; Get returns the copies until Commit or Rollback.
// Training refuses to start while noise is applied or edits can be undone,
// since training would change the weights those hold the originals of.
func (s *Store) BeginTraining() (*Training, error) {
	if s.noisy != nil {
		return nil, sdk.InvalidInputf("train while weight noise is applied: remove the noise first")
	}
	if n := len(s.edits); n > 0 {
		return nil, sdk.InvalidInputf("train with %d weight edit(s) pending: undo them first (or save the edited model and load that)", n)
	}
	t := &Training{st: s, orig: map[string]*ts.Tensor{}, leaves: map[string]*ts.Tensor{}}
	sc := NewScope()
	defer sc.Close()
	for _, name := range s.names {
		p := s.params[name]
		if rg, err := p.RequiresGrad(); err != nil || rg {
			t.Rollback()
			if err == nil {
				err = fmt.Errorf("parameter %s already requires grad (training already running?)", name)
			}
			return nil, fmt.Errorf("begin training: %w", err)
		}
		// Clone gives the leaf its own storage: in-place updates must not
		// reach the original, which Rollback restores.
		leaf := sc.Leaf(sc.Clone(p))
		if err := sc.Err(); err != nil {
			t.Rollback()
			return nil, fmt.Errorf("begin training: copy %s: %w", name, err)
		}
		t.leaves[name] = sc.Keep(leaf)
		t.orig[name] = p
		s.params[name] = leaf
	}
	return t, nil
}

// Params returns the trainable leaves by name; the store owns them.
func (t *Training) Params() map[string]*ts.Tensor { return t.leaves }

// Commit makes the trained values the store's parameters for good: plain
// tensors that do not require grad (their gradient buffers are freed), so
// inference builds no graph. The originals are dropped.
func (t *Training) Commit() error {
	if t.st == nil {
		return nil
	}
	frozen := map[string]*ts.Tensor{}
	for name, leaf := range t.leaves {
		// detach() shares the storage without the autograd metadata that
		// holds the gradient; dropping the leaf frees that metadata.
		d, err := leaf.Detach(false)
		if err != nil {
			DropAll(frozen)
			return fmt.Errorf("commit training: detach %s: %w", name, err)
		}
		frozen[name] = d
	}
	for name, d := range frozen {
		_ = t.leaves[name].Drop()
		_ = t.orig[name].Drop()
		t.st.params[name] = d
	}
	t.st, t.orig, t.leaves = nil, nil, nil
	return nil
}

// Rollback restores the original parameters bit for bit and drops the
// trained copies and their gradients. It does nothing after Commit.
func (t *Training) Rollback() {
	if t.st == nil {
		return
	}
	for name, orig := range t.orig {
		t.st.params[name] = orig
	}
	DropAll(t.leaves)
	t.st, t.orig, t.leaves = nil, nil, nil
}
