package framework

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/knctl/knctl/sdk"
)

func TestParseMethod(t *testing.T) {
	m, err := ParseMethod("noisegrad:n=4,sigma=0.01,base.steps=8")
	require.NoError(t, err)
	assert.Equal(t, "noisegrad", m.Attributor)
	assert.Equal(t, map[string]string{"n": "4", "sigma": "0.01", "base.steps": "8"}, m.Options)
	m, err = ParseMethod("ig")
	require.NoError(t, err)
	assert.Empty(t, m.Options)
	for _, bad := range []string{"", ":n=1", "ig:n"} {
		_, err := ParseMethod(bad)
		assert.ErrorIs(t, err, sdk.ErrInvalidInput, bad)
	}
}

func TestCompare(t *testing.T) {
	h := NewHost([]string{pluginDir(t)})
	defer h.Close()
	ref, _ := ParseMethod("ig:steps=8,quadrature=gauss-legendre")
	right, _ := ParseMethod("ig:steps=4")
	cfg := CompareConfig{
		Model: "toy", Checkpoint: "toy", Methods: []Method{ref, right}, Reference: ref,
		Budgets: []int{1, 2, 4}, Rules: toyRules, Others: 1, Seed: 3,
	}
	res, err := h.Compare(context.Background(), cfg, toyFacts())
	require.NoError(t, err)
	require.Len(t, res.Rows, 6)
	require.Len(t, res.Facts, 2*3*3)
	for _, row := range res.Rows {
		assert.Equal(t, 3, row.Facts)
		if row.Method == ref.Label && row.Budget == 4 {
			// The reference method with all prompts is the reference.
			assert.Equal(t, 1.0, row.Jaccard)
			assert.Equal(t, 1.0, row.Recall)
		}
		assert.Positive(t, row.SecondsPerFact)
	}
	// Budgets take nested prompt subsets, and budget 1 keeps every coarse
	// neuron of its prompt (min-count is capped at n).
	var p1, p2 []string
	for _, f := range res.Facts {
		if f.ID == "paris" && f.Method == ref.Label {
			switch f.Budget {
			case 1:
				p1 = f.Prompts
			case 2:
				p2 = f.Prompts
			}
		}
	}
	require.Len(t, p1, 1)
	require.Len(t, p2, 2)
	assert.Equal(t, p1[0], p2[0])

	_, err = h.Compare(context.Background(), CompareConfig{Model: "toy", Checkpoint: "toy", Methods: []Method{ref}, Reference: ref, Budgets: []int{0}, Rules: toyRules}, toyFacts())
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
}
