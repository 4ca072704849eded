package ig

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/knctl/knctl/sdk"
	"github.com/knctl/knctl/sdk/sdktest"
)

func integrate(t *testing.T, r Rule, m int, f func(float64) float64) float64 {
	a, w, err := r.Nodes(m)
	require.NoError(t, err)
	var s float64
	for k := range a {
		s += w[k] * f(a[k])
	}
	return s
}

func TestRulesOnKnownIntegrals(t *testing.T) {
	cube := func(x float64) float64 { return x * x * x } // integral 1/4
	line := func(x float64) float64 { return 3*x + 1 }   // integral 5/2
	// Riemann sums of x^3 with m = 10, computed by hand:
	// left  = sum_{k=0}^{9} (k/10)^3 / 10 = 2025/10000
	// right = sum_{k=1}^{10} (k/10)^3 / 10 = 3025/10000
	assert.InDelta(t, 0.2025, integrate(t, Left, 10, cube), 1e-12)
	assert.InDelta(t, 0.3025, integrate(t, Right, 10, cube), 1e-12)
	// midpoint: sum ((k+1/2)/10)^3 / 10 = 0.24875; trapezoid on 9 panels.
	assert.InDelta(t, 0.24875, integrate(t, Midpoint, 10, cube), 1e-12)
	var trap float64
	for k := 0; k <= 9; k++ {
		x := float64(k) / 9
		w := 1.0 / 9
		if k == 0 || k == 9 {
			w /= 2
		}
		trap += w * cube(x)
	}
	assert.InDelta(t, trap, integrate(t, Trapezoid, 10, cube), 1e-12)
	// EleutherAI: mean of f over linspace(0,1,10).
	var mean float64
	for k := 0; k <= 9; k++ {
		mean += cube(float64(k)/9) / 10
	}
	assert.InDelta(t, mean, integrate(t, EleutherAI, 10, cube), 1e-12)

	// Midpoint, trapezoid and the EleutherAI mean are exact on lines.
	for _, r := range []Rule{Midpoint, Trapezoid, EleutherAI, GaussLegendre} {
		assert.InDelta(t, 2.5, integrate(t, r, 7, line), 1e-12, string(r))
	}
	// Gauss-Legendre with m nodes is exact up to degree 2m-1.
	assert.InDelta(t, 0.25, integrate(t, GaussLegendre, 2, cube), 1e-12)
	assert.InDelta(t, 1.0/12, integrate(t, GaussLegendre, 6, func(x float64) float64 { return math.Pow(x, 11) }), 1e-12)
	// A smooth non-polynomial: integral of e^x on [0,1] is e - 1.
	assert.InDelta(t, math.E-1, integrate(t, GaussLegendre, 8, math.Exp), 1e-13)
	assert.InDelta(t, math.E-1, integrate(t, Right, 1000, math.Exp), 1e-3)

	_, _, err := Right.Nodes(0)
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
	_, _, err = Trapezoid.Nodes(1)
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
	_, err = ParseRule("simpson")
	assert.ErrorContains(t, err, "gauss-legendre")
}

// exactIG integrates the toy model's closed-form gradient with 4000
// midpoint nodes in float64: an independent reference for the attributor.
func exactIG(t *testing.T, m *sdktest.Toy, q sdk.Query, layer int, hook sdk.Hook) []float64 {
	n := 4000
	alphas := make([]float32, n)
	for k := range alphas {
		alphas[k] = float32((float64(k) + 0.5) / float64(n))
	}
	g, err := m.Gradients(context.Background(), sdk.GradientsRequest{Query: q, Layer: layer, Hook: hook, Alphas: alphas})
	require.NoError(t, err)
	out := make([]float64, g.Width)
	for i := range out {
		var s float64
		for k := range alphas {
			s += float64(g.Grads[k][i]) / float64(n)
		}
		out[i] = float64(g.Activation[i]) * s
	}
	return out
}

func TestAttributeMatchesExactIntegral(t *testing.T) {
	ctx := context.Background()
	m := sdktest.NewToy(3, 16, 32, 5)
	q := sdk.Query{Prompt: "the capital of france is", Answer: "paris"}
	for _, hook := range []sdk.Hook{sdk.HookPost, sdk.HookPre} {
		res, err := Attributor{}.Attribute(ctx, m, sdk.AttributionQuery{Query: q, Hook: hook}, sdk.Options{Values: map[string]string{"steps": "12", "quadrature": "gauss-legendre"}})
		require.NoError(t, err)
		require.Equal(t, int64(3*14), res.Passes, "12 nodes plus both ends per layer")
		for li, l := range res.Layers {
			want := exactIG(t, m, q, l, hook)
			var scale float64
			for _, x := range want {
				scale = math.Max(scale, math.Abs(x))
			}
			for i := range want {
				assert.InDelta(t, want[i], float64(res.Scores[li][i]), 1e-4*scale, "%s %d:%d", hook, l, i)
			}
			d := res.LayerDiagnostics[li]
			assert.InDelta(t, 0, d.CompletenessError, 2e-4*(d.ProbFull+d.ProbBaseline), "completeness at layer %d (float32 gradients)", l)
			p, err := m.Predict(ctx, sdk.PredictRequest{Query: q})
			require.NoError(t, err)
			assert.InEpsilon(t, p.AnswerProb, d.ProbFull, 1e-6)
		}
	}
}

func TestCompletenessErrorShrinksWithSteps(t *testing.T) {
	ctx := context.Background()
	m := sdktest.NewToy(2, 16, 32, 9)
	q := sdk.AttributionQuery{Query: sdk.Query{Prompt: "people in germany speak", Answer: "german"}, Layers: []int{1}}
	errAt := func(rule Rule, steps int) float64 {
		res, err := Attributor{}.Attribute(ctx, m, q, sdk.Options{Values: map[string]string{"steps": itoa(steps), "quadrature": string(rule)}})
		require.NoError(t, err)
		return math.Abs(res.LayerDiagnostics[0].CompletenessError)
	}
	assert.Less(t, errAt(Right, 80), errAt(Right, 20))
	assert.Less(t, errAt(GaussLegendre, 6), errAt(Right, 20), "a few Gauss-Legendre nodes beat 20 Riemann steps")
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestEleutherAIConvention(t *testing.T) {
	ctx := context.Background()
	m := sdktest.NewToy(2, 8, 16, 3)
	q := sdk.Query{Prompt: "a b c", Answer: "d"}
	res, err := Attributor{}.Attribute(ctx, m, sdk.AttributionQuery{Query: q, Layers: []int{0}}, sdk.Options{Values: map[string]string{"quadrature": "eleutherai", "steps": "20"}})
	require.NoError(t, err)
	alphas := make([]float32, 20)
	for k := range alphas {
		alphas[k] = float32(float64(k) / 19)
	}
	g, err := m.Gradients(ctx, sdk.GradientsRequest{Query: q, Layer: 0, Alphas: alphas})
	require.NoError(t, err)
	for i := 0; i < 8; i++ {
		var s float64
		for k := range alphas {
			s += float64(g.Grads[k][i])
		}
		assert.InDelta(t, float64(g.Activation[i])*s/20, float64(res.Scores[0][i]), 1e-9)
	}
	assert.Equal(t, int64(20), res.Passes, "both ends are nodes: no extra passes")
}

func TestBaselineFile(t *testing.T) {
	ctx := context.Background()
	m := sdktest.NewToy(2, 4, 16, 3)
	q := sdk.AttributionQuery{Query: sdk.Query{Prompt: "a b", Answer: "c"}, Layers: []int{1}}
	dir := t.TempDir()
	base := []float32{0.1, -0.2, 0.3, 0}
	write := func(name string, v any) string {
		b, _ := json.Marshal(v)
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, b, 0o644))
		return p
	}
	byList := write("list.json", [][]float32{{0, 0, 0, 0}, base})
	byKey := write("obj.json", map[string][]float32{"1": base})
	opts := func(p string) sdk.Options {
		return sdk.Options{Values: map[string]string{"baseline": p, "quadrature": "gauss-legendre", "steps": "16"}}
	}
	a, err := Attributor{}.Attribute(ctx, m, q, opts(byList))
	require.NoError(t, err)
	b, err := Attributor{}.Attribute(ctx, m, q, opts(byKey))
	require.NoError(t, err)
	assert.Equal(t, a.Scores, b.Scores)
	d := a.LayerDiagnostics[0]
	assert.InDelta(t, 0, d.CompletenessError, 1e-6)
	// P(baseline) is the model with the layer's activation set to it.
	var ivs []sdk.Intervention
	for i, v := range base {
		ivs = append(ivs, sdk.Intervention{Layer: 1, Neuron: i, Hook: sdk.HookPost, Op: sdk.OpSet, Value: v})
	}
	p, err := m.Predict(ctx, sdk.PredictRequest{Query: q.Query, Interventions: ivs})
	require.NoError(t, err)
	assert.InEpsilon(t, p.AnswerProb, d.ProbBaseline, 1e-6)

	short := write("short.json", map[string][]float32{"1": {1}})
	_, err = Attributor{}.Attribute(ctx, m, q, opts(short))
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
	_, err = Attributor{}.Attribute(ctx, m, sdk.AttributionQuery{Query: q.Query, Layers: []int{0}}, opts(byKey))
	assert.ErrorContains(t, err, "no vector for layer 0")
	_, err = Attributor{}.Attribute(ctx, m, q, opts(filepath.Join(dir, "missing.json")))
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
}

func TestBatchingGivesSameScores(t *testing.T) {
	ctx := context.Background()
	m := sdktest.NewToy(2, 8, 16, 4)
	q := sdk.AttributionQuery{Query: sdk.Query{Prompt: "x y z", Answer: "w"}}
	one, err := Attributor{}.Attribute(ctx, m, q, sdk.Options{})
	require.NoError(t, err)
	batched, err := Attributor{}.Attribute(ctx, m, q, sdk.Options{Values: map[string]string{"batch": "3"}})
	require.NoError(t, err)
	assert.Equal(t, one.Scores, batched.Scores)
}

func TestBadOptions(t *testing.T) {
	ctx := context.Background()
	m := sdktest.NewToy(2, 8, 16, 4)
	q := sdk.AttributionQuery{Query: sdk.Query{Prompt: "x", Answer: "w"}}
	for opt, val := range map[string]string{"steps": "many", "quadrature": "simpson", "batch": "-1", "stepz": "3"} {
		_, err := Attributor{}.Attribute(ctx, m, q, sdk.Options{Values: map[string]string{opt: val}})
		assert.ErrorIs(t, err, sdk.ErrInvalidInput, opt)
		assert.Contains(t, err.Error(), opt)
	}
}
