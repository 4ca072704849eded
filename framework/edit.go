package framework

import (
	"context"
	"fmt"
	"math"
	"sort"

	"github.com/knctl/knctl/sdk"
)

// UpdateRule is how an update edit moves a value slot from the old answer's
// embedding towards the new one's.
type UpdateRule string

// Update rules.
const (
	// RuleDai is Dai et al.'s released code: v <- v - l1*(|v|/|e_old|)*e_old
	// + l2*(|v|/|e_new|)*e_new (defaults l1 = 1, l2 = 8).
	RuleDai UpdateRule = "dai"
	// RuleEleutherAI is the EleutherAI library's: v <- v - 2*e_old + 2*e_new.
	RuleEleutherAI UpdateRule = "eleutherai"
)

// UpdateSlot returns value slot v moved from eOld to eNew by rule.
func UpdateSlot(v, eOld, eNew []float32, rule UpdateRule, l1, l2 float64) ([]float32, error) {
	if len(eOld) != len(v) || len(eNew) != len(v) {
		return nil, fmt.Errorf("update: value slot has %d values, embeddings %d and %d", len(v), len(eOld), len(eNew))
	}
	out := make([]float32, len(v))
	switch rule {
	case RuleEleutherAI:
		for i := range v {
			out[i] = float32(float64(v[i]) - 2*float64(eOld[i]) + 2*float64(eNew[i]))
		}
	case RuleDai, "":
		nv, no, nn := norm(v), norm(eOld), norm(eNew)
		if no == 0 || nn == 0 {
			return nil, sdk.InvalidInputf("update: an answer's embedding is zero; its direction is undefined")
		}
		a, b := l1*nv/no, l2*nv/nn
		for i := range v {
			out[i] = float32(float64(v[i]) - a*float64(eOld[i]) + b*float64(eNew[i]))
		}
	default:
		return nil, sdk.InvalidInputf("update rule %q: expected dai or eleutherai", rule)
	}
	return out, nil
}

func norm(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

// SlotFunc computes new value slots for the neurons of one layer from their
// current values.
type SlotFunc func(layer int, neurons []int, current [][]float32) ([][]float32, error)

// Edit is a set of value-slot edits applied to a model, in order; Undo
// reverts them newest first.
type Edit struct {
	IDs []sdk.EditID
}

// EditSlots applies f to the value slots of neurons, one model edit per
// layer. On failure the edits already made are undone.
func EditSlots(ctx context.Context, m sdk.Model, neurons []Neuron, f SlotFunc) (*Edit, error) {
	byLayer := map[int][]int{}
	for _, n := range neurons {
		byLayer[n.Layer()] = append(byLayer[n.Layer()], n.Index())
	}
	layers := make([]int, 0, len(byLayer))
	for l := range byLayer {
		layers = append(layers, l)
	}
	sort.Ints(layers)
	e := &Edit{}
	for _, l := range layers {
		idx := byLayer[l]
		cur, err := m.ValueSlots(ctx, l, idx)
		if err != nil {
			_ = e.Undo(context.WithoutCancel(ctx), m)
			return nil, fmt.Errorf("read value slots of layer %d: %w", l, err)
		}
		next, err := f(l, idx, cur)
		if err != nil {
			_ = e.Undo(context.WithoutCancel(ctx), m)
			return nil, err
		}
		id, err := m.SetValueSlots(ctx, l, idx, next)
		if err != nil {
			_ = e.Undo(context.WithoutCancel(ctx), m)
			return nil, fmt.Errorf("write value slots of layer %d: %w", l, err)
		}
		e.IDs = append(e.IDs, id)
	}
	return e, nil
}

// Undo reverts the edit, newest layer first.
func (e *Edit) Undo(ctx context.Context, m sdk.Model) error {
	for i := len(e.IDs) - 1; i >= 0; i-- {
		if err := m.UndoEdit(ctx, e.IDs[i]); err != nil {
			return fmt.Errorf("undo edit %d: %w", e.IDs[i], err)
		}
	}
	e.IDs = nil
	return nil
}

// Erase sets the neurons' value slots to vector (zero when nil).
func Erase(ctx context.Context, m sdk.Model, neurons []Neuron, vector []float32) (*Edit, error) {
	return EditSlots(ctx, m, neurons, func(_ int, idx []int, cur [][]float32) ([][]float32, error) {
		out := make([][]float32, len(idx))
		for i := range out {
			if vector == nil {
				out[i] = make([]float32, len(cur[i]))
				continue
			}
			if len(vector) != len(cur[i]) {
				return nil, fmt.Errorf("erase: vector has %d values, value slots %d", len(vector), len(cur[i]))
			}
			out[i] = append([]float32(nil), vector...)
		}
		return out, nil
	})
}

// Update moves the neurons' value slots from eOld to eNew by rule.
func Update(ctx context.Context, m sdk.Model, neurons []Neuron, eOld, eNew []float32, rule UpdateRule, l1, l2 float64) (*Edit, error) {
	return EditSlots(ctx, m, neurons, func(_ int, _ []int, cur [][]float32) ([][]float32, error) {
		out := make([][]float32, len(cur))
		for i, v := range cur {
			u, err := UpdateSlot(v, eOld, eNew, rule, l1, l2)
			if err != nil {
				return nil, err
			}
			out[i] = u
		}
		return out, nil
	})
}

// SingleToken returns the id of text's only token, or an error naming the
// text when the tokenizer splits it (an embedding edit needs one token).
func SingleToken(ctx context.Context, m sdk.Model, text string) (int, error) {
	enc, err := m.Tokenize(ctx, text)
	if err != nil {
		return 0, err
	}
	if len(enc.IDs) != 1 {
		return 0, sdk.InvalidInputf("%q: the tokenizer splits it into %d tokens %q; the edit needs a single token (GPT-2 words usually need their leading space)", text, len(enc.IDs), enc.Tokens)
	}
	return enc.IDs[0], nil
}

// Embedding returns the input embedding of text's single token.
func Embedding(ctx context.Context, m sdk.Model, text string) ([]float32, error) {
	id, err := SingleToken(ctx, m, text)
	if err != nil {
		return nil, err
	}
	rows, err := m.Embeddings(ctx, []int{id})
	if err != nil {
		return nil, err
	}
	return rows[0], nil
}
