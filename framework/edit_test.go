package framework

import (
	"context"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/knctl/knctl/sdk"
	"github.com/knctl/knctl/sdk/sdktest"
)

func TestUpdateSlot(t *testing.T) {
	v := []float32{3, 4}    // |v| = 5
	eOld := []float32{1, 0} // |e_old| = 1
	eNew := []float32{0, 2} // |e_new| = 2
	// dai, l1 = 1, l2 = 8: v - 5*e_old + 8*(5/2)*e_new = (3-5, 4+40)
	got, err := UpdateSlot(v, eOld, eNew, RuleDai, 1, 8)
	require.NoError(t, err)
	assert.Equal(t, []float32{-2, 44}, got)
	// eleutherai: v - 2 e_old + 2 e_new = (1, 8)
	got, err = UpdateSlot(v, eOld, eNew, RuleEleutherAI, 0, 0)
	require.NoError(t, err)
	assert.Equal(t, []float32{1, 8}, got)
	_, err = UpdateSlot(v, []float32{0, 0}, eNew, RuleDai, 1, 8)
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
	_, err = UpdateSlot(v, eOld, eNew, "rome", 1, 8)
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
	_, err = UpdateSlot(v, []float32{1}, eNew, RuleDai, 1, 8)
	assert.Error(t, err)
}

func TestEraseAndUpdateOnModel(t *testing.T) {
	ctx := context.Background()
	m := sdktest.NewToy(3, 16, 32, 1)
	ns := []Neuron{{0, 2}, {2, 5}, {2, 7}}
	q := sdk.Query{Prompt: "the capital of france is", Answer: "paris"}
	before, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 5})
	require.NoError(t, err)
	orig, err := m.ValueSlots(ctx, 2, []int{5, 7})
	require.NoError(t, err)

	e, err := Erase(ctx, m, ns, nil)
	require.NoError(t, err)
	require.Len(t, e.IDs, 2, "one edit per layer")
	got, err := m.ValueSlots(ctx, 2, []int{5, 7})
	require.NoError(t, err)
	assert.Equal(t, [][]float32{make([]float32, 32), make([]float32, 32)}, got)
	require.NoError(t, e.Undo(ctx, m))
	after, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 5})
	require.NoError(t, err)
	assert.Equal(t, before, after)

	eOld, err := Embedding(ctx, m, "paris")
	require.NoError(t, err)
	eNew, err := Embedding(ctx, m, "rome")
	require.NoError(t, err)
	e, err = Update(ctx, m, ns, eOld, eNew, RuleDai, 1, 8)
	require.NoError(t, err)
	got, err = m.ValueSlots(ctx, 2, []int{5})
	require.NoError(t, err)
	want, _ := UpdateSlot(orig[0], eOld, eNew, RuleDai, 1, 8)
	assert.Equal(t, want, got[0])
	require.NoError(t, e.Undo(ctx, m))

	_, err = Embedding(ctx, m, "two words")
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
	assert.ErrorContains(t, err, "2 tokens")
	_, err = Erase(ctx, m, []Neuron{{0, 99}}, nil)
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
	_ = math.Abs
}
