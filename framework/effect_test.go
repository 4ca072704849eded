package framework

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/knctl/knctl/sdk"
	"github.com/knctl/knctl/sdk/sdktest"
)

func TestRandomLike(t *testing.T) {
	ns := []Neuron{{0, 1}, {0, 2}, {2, 7}}
	a := RandomLike(rand.New(rand.NewPCG(1, 2)), ns, 8)
	b := RandomLike(rand.New(rand.NewPCG(1, 2)), ns, 8)
	assert.Equal(t, a, b)
	require.Len(t, a, 3)
	layers := map[int]int{}
	for _, n := range a {
		layers[n.Layer()]++
		assert.NotContains(t, ns, n)
	}
	assert.Equal(t, map[int]int{0: 2, 2: 1}, layers)
}

func TestEffectArithmetic(t *testing.T) {
	ctx := context.Background()
	m := sdktest.NewToy(3, 16, 32, 1)
	facts := toyFacts()
	neurons := map[string][]Neuron{"paris": {{0, 3}, {2, 5}}}
	cfg := EffectConfig{Hook: sdk.HookPost, Op: sdk.OpSet, Value: 0, Others: 1, Width: 16, Seed: 4}
	rep, err := Effect(ctx, m, facts, neurons, facts, cfg)
	require.NoError(t, err)
	assert.Equal(t, 1, rep.Facts, "facts without neurons are skipped")
	assert.Equal(t, 4, rep.Own.N)
	assert.Equal(t, 4, rep.Others.N, "one fact of another relation, four prompts")
	assert.Equal(t, 4, rep.RandomOn.N)

	// Recompute the own change by hand.
	prompts, _ := facts[0].Queries()
	var before, after float64
	for _, p := range prompts {
		q := sdk.Query{Prompt: p, Answer: "paris"}
		b, err := m.Predict(ctx, sdk.PredictRequest{Query: q})
		require.NoError(t, err)
		a, err := m.Predict(ctx, sdk.PredictRequest{Query: q, Interventions: []sdk.Intervention{
			{Layer: 0, Neuron: 3, Hook: sdk.HookPost, Op: sdk.OpSet}, {Layer: 2, Neuron: 5, Hook: sdk.HookPost, Op: sdk.OpSet},
		}})
		require.NoError(t, err)
		before += b.AnswerProb
		after += a.AnswerProb
	}
	assert.InDelta(t, (after-before)/before, rep.Own.RatioOfMeans, 1e-12)
	assert.InDelta(t, before/4, rep.Own.MeanBefore, 1e-12)
	assert.NotEqual(t, rep.Own.MeanBefore, rep.Own.MeanAfter)

	// Scaling by one changes nothing.
	cfg.Op, cfg.Value = sdk.OpScale, 1
	rep, err = Effect(ctx, m, facts, neurons, facts, cfg)
	require.NoError(t, err)
	assert.InDelta(t, 0, rep.Own.RatioOfMeans, 1e-12)
	assert.InDelta(t, 0, rep.Others.RatioOfMeans, 1e-12)
	assert.InDelta(t, rep.Own.MarginBefore, rep.Own.MarginAfter, 1e-12)
}

func TestProbeMargin(t *testing.T) {
	ctx := context.Background()
	m := sdktest.NewToy(2, 8, 16, 3)
	q := sdk.Query{Prompt: "a b c", Answer: "d"}
	p, err := ProbeQuery(ctx, m, q, nil)
	require.NoError(t, err)
	pred, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 16})
	require.NoError(t, err)
	var best float64
	for _, tp := range pred.Top {
		if tp.ID != pred.AnswerIDs[0] {
			best = math.Max(best, tp.Prob)
		}
	}
	assert.InDelta(t, math.Log(pred.AnswerProb)-math.Log(best), p.Margin, 1e-9)
	assert.Equal(t, pred.AnswerRank == 0, p.Correct)
}

func TestShareNeurons(t *testing.T) {
	a, b, c := Neuron{0, 1}, Neuron{1, 2}, Neuron{1, 3}
	res := []*FactResult{
		{Relation: "x", Neurons: []Neuron{a, b}},
		{Relation: "x", Neurons: []Neuron{a, b, c}},
		{Relation: "y", Neurons: []Neuron{c}},
	}
	s := ShareNeurons(res, 2)
	assert.Equal(t, 1, s.WithinPairs)
	assert.InDelta(t, 2, s.WithinShared, 1e-12)
	assert.Equal(t, 2, s.AcrossPairs)
	assert.InDelta(t, 0.5, s.AcrossShared, 1e-12)
	assert.Equal(t, []int{2, 4}, s.LayerCounts)
	assert.InDelta(t, 2, s.NeuronsPerFct, 1e-12)
}

func TestSampleFacts(t *testing.T) {
	facts := toyFacts()
	s := SampleFacts(facts, 1, 3)
	require.Len(t, s, 2)
	assert.NotEqual(t, s[0].Relation, s[1].Relation)
	assert.Equal(t, s, SampleFacts(facts, 1, 3))
	assert.Len(t, SampleFacts(facts, 10, 3), 3)
}
