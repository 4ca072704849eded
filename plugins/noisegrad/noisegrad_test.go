package noisegrad

import (
	"context"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/knctl/knctl/internal/testbin"
	"github.com/knctl/knctl/plugins/ig"
	"github.com/knctl/knctl/sdk"
	"github.com/knctl/knctl/sdk/conformance"
	"github.com/knctl/knctl/sdk/sdktest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

func peersFor(m sdk.Model) sdk.AttributorSource {
	return &sdktest.Peers{Model: m, Attributors: map[string]sdk.Attributor{"ig": ig.Attributor{}, Name: Attributor{}}}
}

var query = sdk.AttributionQuery{Query: sdk.Query{Prompt: "the capital of france is", Answer: "paris"}}

func attribute(t *testing.T, m sdk.Model, values map[string]string) *sdk.Attribution {
	t.Helper()
	res, err := Attributor{}.Attribute(context.Background(), m, query, sdk.Options{Values: values, Peers: peersFor(m)})
	require.NoError(t, err)
	return res
}

func TestSigmaZeroEqualsBase(t *testing.T) {
	m := sdktest.NewToy(3, 16, 32, 1)
	base, err := ig.Attributor{}.Attribute(context.Background(), m, query, sdk.Options{Values: map[string]string{"steps": "8"}})
	require.NoError(t, err)
	for _, n := range []string{"1", "4"} {
		res := attribute(t, m, map[string]string{"sigma": "0", "n": n, "base.steps": "8"})
		assert.Equal(t, base.Scores, res.Scores, "n=%s", n)
		assert.Equal(t, base.Layers, res.Layers)
	}
}

func TestSeedsAndAveraging(t *testing.T) {
	m := sdktest.NewToy(3, 16, 32, 1)
	opts := map[string]string{"sigma": "0.1", "n": "3", "seed": "5", "base.steps": "8"}
	a := attribute(t, m, opts)
	b := attribute(t, m, opts)
	assert.Equal(t, a.Scores, b.Scores, "a fixed seed gives identical scores")
	opts["seed"] = "6"
	c := attribute(t, m, opts)
	assert.NotEqual(t, a.Scores, c.Scores, "different seeds differ")
	assert.Equal(t, 3*base8Passes(), a.Passes)

	// The average of the samples, each the base method on a noisy model.
	ctx := context.Background()
	want := make([]float64, 16)
	for i := 0; i < 3; i++ {
		require.NoError(t, m.ApplyNoise(ctx, sdk.NoiseSpec{Seed: 5*1_000_003 + int64(i), Sigma: 0.1, Mode: sdk.NoiseMultiplicative, Scope: sdk.ScopeAll}))
		r, err := ig.Attributor{}.Attribute(ctx, m, query, sdk.Options{Values: map[string]string{"steps": "8"}})
		require.NoError(t, err)
		for x, v := range r.Scores[2] {
			want[x] += float64(v) / 3
		}
	}
	require.NoError(t, m.RemoveNoise(ctx))
	for x := range want {
		assert.InDelta(t, want[x], float64(a.Scores[2][x]), 1e-7)
	}
}

func base8Passes() int64 { return 3 * (8 + 1) } // right rule: 8 nodes plus alpha=0, 3 layers

// TestFactEqualsPerPrompt: attributing a fact's prompts in one call (each
// noisy model drawn once) gives every prompt the scores it gets alone.
func TestFactEqualsPerPrompt(t *testing.T) {
	m := sdktest.NewToy(3, 16, 32, 1)
	ctx := context.Background()
	qs := []sdk.AttributionQuery{query, {Query: sdk.Query{Prompt: "france has the capital", Answer: "paris"}}}
	for _, opts := range []map[string]string{
		{"sigma": "0.1", "n": "3", "seed": "2", "base.steps": "8"},
		{"sigma": "0.1", "n": "2", "m": "2", "input-sigma": "0.3", "base.steps": "8"},
	} {
		o := sdk.Options{Values: opts, Peers: peersFor(m)}
		fact, err := Attributor{}.AttributeFact(ctx, m, qs, o)
		require.NoError(t, err)
		require.Len(t, fact, 2)
		for i, q := range qs {
			one, err := Attributor{}.Attribute(ctx, m, q, o)
			require.NoError(t, err)
			assert.Equal(t, one.Scores, fact[i].Scores, "prompt %d, %v", i, opts)
			assert.Equal(t, one.Passes, fact[i].Passes)
		}
		assert.NotEqual(t, fact[0].Scores, fact[1].Scores)
	}
	_, err := Attributor{}.AttributeFact(ctx, m, nil, sdk.Options{Peers: peersFor(m)})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "prompts: none given")
}

func TestWeightsRestored(t *testing.T) {
	ctx := context.Background()
	m := sdktest.NewToy(3, 16, 32, 1)
	before, err := m.Predict(ctx, sdk.PredictRequest{Query: query.Query, TopK: 5})
	require.NoError(t, err)
	attribute(t, m, map[string]string{"sigma": "0.2", "n": "2"})
	after, err := m.Predict(ctx, sdk.PredictRequest{Query: query.Query, TopK: 5})
	require.NoError(t, err)
	assert.Equal(t, before, after)
	// Also when the base method fails midway.
	_, err = Attributor{}.Attribute(ctx, m, query, sdk.Options{Values: map[string]string{"sigma": "0.2", "base.steps": "0"}, Peers: peersFor(m)})
	require.Error(t, err)
	after, err = m.Predict(ctx, sdk.PredictRequest{Query: query.Query, TopK: 5})
	require.NoError(t, err)
	assert.Equal(t, before, after)
}

func TestFusionGrad(t *testing.T) {
	m := sdktest.NewToy(3, 16, 32, 1)
	noise := attribute(t, m, map[string]string{"sigma": "0.1", "n": "2", "base.steps": "8"})
	zeroInput := attribute(t, m, map[string]string{"sigma": "0.1", "n": "2", "m": "3", "input-sigma": "0", "base.steps": "8"})
	assert.Equal(t, noise.Scores, zeroInput.Scores, "FusionGrad without input noise is NoiseGrad")
	fusion := attribute(t, m, map[string]string{"sigma": "0.1", "n": "2", "m": "3", "input-sigma": "0.3", "base.steps": "8"})
	assert.NotEqual(t, noise.Scores, fusion.Scores)
	assert.Equal(t, 6*base8Passes(), fusion.Passes)
	assert.Contains(t, fusion.Method, "fusiongrad")
}

func TestAutoSigma(t *testing.T) {
	ctx := context.Background()
	m := sdktest.NewToy(3, 16, 32, 1)
	res := attribute(t, m, map[string]string{"sigma": "auto", "n": "2", "base.steps": "4"})
	sigma := res.Extra["sigma"]
	require.Positive(t, sigma)
	clean, err := m.Predict(ctx, sdk.PredictRequest{Query: query.Query})
	require.NoError(t, err)
	mean := func(s float64) float64 {
		var sum float64
		for i := 0; i < 8; i++ {
			require.NoError(t, m.ApplyNoise(ctx, sdk.NoiseSpec{Seed: -1 - int64(i), Sigma: s, Mode: sdk.NoiseMultiplicative, Scope: sdk.ScopeAll}))
			p, err := m.Predict(ctx, sdk.PredictRequest{Query: query.Query})
			require.NoError(t, err)
			sum += p.AnswerProb / 8
		}
		require.NoError(t, m.RemoveNoise(ctx))
		return sum
	}
	if sigma < 0.512 {
		assert.GreaterOrEqual(t, mean(sigma), 0.95*clean.AnswerProb, "the chosen sigma keeps 95%%")
		assert.Less(t, mean(2*sigma), 0.95*clean.AnswerProb, "the next one does not")
	}
}

func TestBadOptions(t *testing.T) {
	m := sdktest.NewToy(3, 16, 32, 1)
	for _, opts := range []map[string]string{
		{"n": "0"}, {"sigma": "-1"}, {"sigma": "lots"}, {"mode": "weird"}, {"scope": "attention"},
		{"m": "-2"}, {"base": "noisegrad"}, {"colour": "red"}, {"base": "shap"},
	} {
		_, err := Attributor{}.Attribute(context.Background(), m, query, sdk.Options{Values: opts, Peers: peersFor(m)})
		assert.ErrorIs(t, err, sdk.ErrInvalidInput, "%v", opts)
	}
	_, err := Attributor{}.Attribute(context.Background(), m, query, sdk.Options{})
	assert.ErrorContains(t, err, "no attributor source")
}

func TestConformance(t *testing.T) {
	conformance.Attributor(t, Attributor{}, conformance.WithPeers(peersFor))
	conformance.AttributorPlugin(t, testbin.Build(t, "./plugins/noisegrad/cmd/knctl-attributor-noisegrad"), conformance.WithPeers(peersFor))
}

// TestDiagnosticsAreTheMeans: the per-layer diagnostics are the means over
// the noisy models, so P(answer) and completeness stay meaningful.
func TestDiagnosticsAreTheMeans(t *testing.T) {
	m := sdktest.NewToy(3, 16, 32, 1)
	ctx := context.Background()
	res := attribute(t, m, map[string]string{"sigma": "0.1", "n": "3", "seed": "4", "base.steps": "8"})
	require.Len(t, res.LayerDiagnostics, 3)
	var want float64
	for i := 0; i < 3; i++ {
		require.NoError(t, m.ApplyNoise(ctx, sdk.NoiseSpec{Seed: 4*1_000_003 + int64(i), Sigma: 0.1}))
		p, err := m.Predict(ctx, sdk.PredictRequest{Query: query.Query})
		require.NoError(t, err)
		want += p.AnswerProb / 3
	}
	require.NoError(t, m.RemoveNoise(ctx))
	for k, d := range res.LayerDiagnostics {
		assert.Equal(t, k, d.Layer)
		assert.InDelta(t, want, d.ProbFull, 1e-6, "mean answer probability of the noisy models")
		var sum float64
		for _, x := range res.Scores[k] {
			sum += float64(x)
		}
		assert.InDelta(t, sum, d.ScoreSum, 1e-5)
		assert.InDelta(t, d.ScoreSum-(d.ProbFull-d.ProbBaseline), d.CompletenessError, 1e-12)
	}
}
