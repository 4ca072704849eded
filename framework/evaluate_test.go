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

func TestEvaluateUpdatesNoOpAndUndo(t *testing.T) {
	ctx := context.Background()
	m := sdktest.NewToy(3, 16, 32, 1)
	facts := toyFacts()
	cf := Counterfactual{Fact: facts[0], TargetNew: "rome", Neighbors: []Fact{facts[1]}}
	neurons := map[string][]Neuron{"paris": {{0, 1}, {2, 3}}}
	q := sdk.Query{Prompt: "the capital of france is", Answer: "paris"}
	before, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 5})
	require.NoError(t, err)

	// l1 = l2 = 0 leaves the slots as they are: nothing may change (but the
	// toy's float64 weights round-trip through float32 value slots).
	noop, err := EvaluateUpdates(ctx, m, []Counterfactual{cf}, neurons, facts, UpdateConfig{Rule: RuleDai, L1: 0, L2: 0, Probe: 2, Seed: 1})
	require.NoError(t, err)
	assert.Equal(t, 1, noop.Facts)
	assert.Equal(t, noop.RankBefore, noop.RankAfter)
	assert.InEpsilon(t, noop.PPLSameBefore, noop.PPLSameAfter, 1e-6)
	assert.InEpsilon(t, noop.PPLOtherBefore, noop.PPLOtherAfter, 1e-6)
	assert.Zero(t, noop.ChangeRate)
	assert.Zero(t, noop.AccuracySameDelta)

	// Perplexity of the other relation's fact, computed independently.
	prompts, _ := facts[2].Queries()
	var nll float64
	for _, p := range prompts {
		pr, err := m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: p, Answer: facts[2].Target}})
		require.NoError(t, err)
		nll -= math.Log(pr.AnswerProb)
	}
	assert.InDelta(t, math.Exp(nll/4), noop.PPLOtherBefore, 1e-9)

	big, err := EvaluateUpdates(ctx, m, []Counterfactual{cf}, neurons, facts, UpdateConfig{Rule: RuleDai, L1: 1, L2: 8, Probe: 2, Seed: 1})
	require.NoError(t, err)
	assert.NotEqual(t, noop.RankAfter, big.RankAfter, "a real update moves the new answer")
	after, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 5})
	require.NoError(t, err)
	assert.Equal(t, before, after, "every edit is undone")

	assert.InDelta(t, 3/(1/0.5+1/0.25+1/1.0), harmonic(0.5, 0.25, 1), 1e-12)
	assert.Zero(t, harmonic(0.5, 0))
}

func TestEvaluateErase(t *testing.T) {
	ctx := context.Background()
	m := sdktest.NewToy(3, 16, 32, 1)
	facts := toyFacts()
	var all []Neuron
	for i := 0; i < 16; i++ {
		all = append(all, Neuron{2, i})
	}
	res, err := EvaluateErase(ctx, m, "capital", all, nil, facts)
	require.NoError(t, err)
	assert.NotEqual(t, res.PPLSameBefore, res.PPLSameAfter, "erasing a whole layer changes the answers")
	again, err := EvaluateErase(ctx, m, "capital", nil, nil, facts)
	require.NoError(t, err)
	assert.InEpsilon(t, again.PPLSameBefore, again.PPLSameAfter, 1e-6)
	assert.Equal(t, res.PPLSameBefore, again.PPLSameBefore, "the first erase was undone")

	results := []*FactResult{{Relation: "capital", Neurons: []Neuron{{0, 1}, {1, 2}}}, {Relation: "capital", Neurons: []Neuron{{0, 1}}}}
	assert.Equal(t, []Neuron{{0, 1}}, RelationTopNeurons(results, "capital", 1))
	ctrl := RandomControl(map[string][]Neuron{"a": {{0, 1}}, "b": {{2, 3}, {2, 4}}}, 16, 9)
	assert.Equal(t, ctrl, RandomControl(map[string][]Neuron{"a": {{0, 1}}, "b": {{2, 3}, {2, 4}}}, 16, 9))
	assert.Len(t, ctrl["b"], 2)
	assert.Equal(t, 2, ctrl["b"][0].Layer())
}
