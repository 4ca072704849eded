// Package conformance checks a model or attributor implementation — in
// process or as a plugin binary — against the knctl contract. Plugin
// authors call it from their own tests:
//
//	func TestConformance(t *testing.T) {
//		conformance.ModelPlugin(t, "bin/knctl-model-mine", "path/to/checkpoint", conformance.ModelCase{
//			Prompt: "The capital of France is", Answer: " Paris",
//		})
//	}
//
// The checks are behavioural: shapes and ranges, agreement between calls
// (Predict's probability equals the gradient primitive's at alpha = 1,
// integrated gradients are complete), bit-exact undo of edits and noise,
// and invalid input reported as sdk.ErrInvalidInput.
package conformance

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/knctl/knctl/sdk"
	"github.com/knctl/knctl/sdk/sdktest"
)

// ModelCase is a query the model under test can answer.
type ModelCase struct {
	Prompt string
	Answer string
	// CompletenessTolerance bounds |sum of IG scores - (P(w) - P(0))|
	// relative to P(w) + P(0) for a 64-node Gauss-Legendre integral of
	// the last layer; default 1e-3.
	CompletenessTolerance float64
}

// ModelPlugin launches the model plugin binary at path, loads checkpoint
// and runs Model on it.
func ModelPlugin(t *testing.T, path, checkpoint string, c ModelCase) {
	t.Helper()
	ctx := context.Background()
	proc, err := sdk.Launch(ctx, path, sdk.KindModel, sdk.LaunchOptions{CallTimeout: 5 * time.Minute, Stderr: os.Stderr})
	require.NoError(t, err)
	t.Cleanup(proc.Close)
	m := proc.Model()
	require.NotNil(t, m, "plugin %s did not dispense a model", path)
	_, err = m.Load(ctx, sdk.LoadRequest{Checkpoint: filepath.Join(t.TempDir(), "no-such-checkpoint")})
	assert.ErrorIs(t, err, sdk.ErrInvalidInput, "loading a missing checkpoint is invalid input")
	// A failed load leaves the plugin able to load.
	_, err = m.Load(ctx, sdk.LoadRequest{Checkpoint: checkpoint})
	require.NoError(t, err)
	Model(t, m, c)
}

// Model checks a loaded model.
func Model(t *testing.T, m sdk.Model, c ModelCase) {
	t.Helper()
	ctx := context.Background()
	info, err := m.Info(ctx)
	require.NoError(t, err)
	require.Positive(t, info.Layers, "layers")
	require.Positive(t, info.FFNWidth, "FFN width")
	require.Positive(t, info.Hidden, "hidden size")
	require.Positive(t, info.VocabSize, "vocabulary size")
	require.NotEmpty(t, info.Architecture)
	q := sdk.Query{Prompt: c.Prompt, Answer: c.Answer}
	last := info.Layers - 1

	t.Run("tokenize", func(t *testing.T) {
		enc, err := m.Tokenize(ctx, c.Prompt)
		require.NoError(t, err)
		require.NotEmpty(t, enc.IDs)
		require.Len(t, enc.Tokens, len(enc.IDs))
		for _, id := range enc.IDs {
			require.True(t, id >= 0 && id < info.VocabSize, "token id %d outside the vocabulary", id)
		}
	})

	var pred sdk.Prediction
	t.Run("predict", func(t *testing.T) {
		pred, err = m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 5})
		require.NoError(t, err)
		require.NotEmpty(t, pred.AnswerIDs)
		require.Len(t, pred.AnswerTokenProb, len(pred.AnswerIDs))
		prod := 1.0
		for _, p := range pred.AnswerTokenProb {
			require.True(t, p > 0 && p <= 1, "token probability %g", p)
			prod *= p
		}
		assert.InEpsilon(t, prod, pred.AnswerProb, 1e-9, "answer probability is the product of its tokens'")
		require.Len(t, pred.Top, 5)
		var sum float64
		for i, tp := range pred.Top {
			sum += tp.Prob
			if i > 0 {
				require.LessOrEqual(t, tp.Prob, pred.Top[i-1].Prob, "top-k sorted")
			}
		}
		require.LessOrEqual(t, sum, 1+1e-6)
		require.NotEmpty(t, pred.TargetPositions)
	})

	t.Run("activations", func(t *testing.T) {
		for _, hook := range []sdk.Hook{sdk.HookPost, sdk.HookPre} {
			a, err := m.Activations(ctx, sdk.ActivationsRequest{Query: sdk.Query{Prompt: c.Prompt}, Hook: hook})
			require.NoError(t, err)
			require.Len(t, a.Values, info.Layers)
			require.Equal(t, hook, a.Hook)
			for _, l := range a.Values {
				require.Len(t, l, len(a.Positions))
				for _, p := range l {
					require.Len(t, p, info.FFNWidth)
				}
			}
		}
	})

	t.Run("gradients", func(t *testing.T) {
		g, err := m.Gradients(ctx, sdk.GradientsRequest{Query: q, Layer: last, Alphas: []float32{0, 0.5, 1}})
		require.NoError(t, err)
		require.Len(t, g.Grads, 3)
		require.Len(t, g.Probs, 3)
		require.Len(t, g.Activation, g.Positions*g.Width)
		require.Equal(t, info.FFNWidth, g.Width)
		assert.InEpsilon(t, pred.AnswerProb, g.Probs[2], 1e-4, "P at alpha=1 equals Predict's")

		// Completeness of integrated gradients: sum_i w_i * integral of the
		// gradient = P(w) - P(0), checked with 64 Gauss-Legendre nodes.
		nodes, weights := gaussLegendre(64)
		alphas := make([]float32, len(nodes))
		for i, x := range nodes {
			alphas[i] = float32(x)
		}
		gg, err := m.Gradients(ctx, sdk.GradientsRequest{Query: q, Layer: last, Alphas: append(alphas, 0, 1)})
		require.NoError(t, err)
		var total float64
		for i, w := range gg.Activation {
			var s float64
			for k, wk := range weights {
				s += wk * float64(gg.Grads[k][i])
			}
			total += float64(w) * s
		}
		p0, p1 := gg.Probs[len(alphas)], gg.Probs[len(alphas)+1]
		tol := c.CompletenessTolerance
		if tol == 0 {
			tol = 1e-3
		}
		assert.InDelta(t, p1-p0, total, tol*(p1+p0), "IG completeness")
	})

	t.Run("interventions", func(t *testing.T) {
		a, err := m.Activations(ctx, sdk.ActivationsRequest{Query: q, Layers: []int{last}})
		require.NoError(t, err)
		same, err := m.Predict(ctx, sdk.PredictRequest{Query: q, Interventions: []sdk.Intervention{
			{Layer: 0, Neuron: 0, Hook: sdk.HookPost, Op: sdk.OpScale, Value: 1},
			{Layer: last, Neuron: 1, Hook: sdk.HookPost, Op: sdk.OpSet, Value: a.Values[0][0][1]},
		}})
		require.NoError(t, err)
		assert.InEpsilon(t, pred.AnswerProb, same.AnswerProb, 1e-5, "identity interventions change nothing")
		var ivs []sdk.Intervention
		for i := 0; i < info.FFNWidth; i++ {
			ivs = append(ivs, sdk.Intervention{Layer: last, Neuron: i, Hook: sdk.HookPost, Op: sdk.OpSet, Value: 0})
		}
		zeroed, err := m.Predict(ctx, sdk.PredictRequest{Query: q, Interventions: ivs})
		require.NoError(t, err)
		assert.NotEqual(t, pred.AnswerProb, zeroed.AnswerProb, "zeroing a whole layer changes the prediction")
	})

	t.Run("value slots", func(t *testing.T) {
		slots, err := m.ValueSlots(ctx, last, []int{0, 2})
		require.NoError(t, err)
		require.Len(t, slots, 2)
		require.Len(t, slots[0], info.Hidden)
		before, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 5})
		require.NoError(t, err)
		zero := [][]float32{make([]float32, info.Hidden), make([]float32, info.Hidden)}
		id, err := m.SetValueSlots(ctx, last, []int{0, 2}, zero)
		require.NoError(t, err)
		got, err := m.ValueSlots(ctx, last, []int{0, 2})
		require.NoError(t, err)
		assert.Equal(t, zero, got)
		require.NoError(t, m.UndoEdit(ctx, id))
		restored, err := m.ValueSlots(ctx, last, []int{0, 2})
		require.NoError(t, err)
		assert.Equal(t, slots, restored, "undo is bit-exact")
		after, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 5})
		require.NoError(t, err)
		assert.Equal(t, before, after, "undo restores predictions exactly")
	})

	t.Run("noise", func(t *testing.T) {
		spec := sdk.NoiseSpec{Seed: 7, Sigma: 0.1, Mode: sdk.NoiseMultiplicative, Scope: sdk.ScopeAll}
		require.NoError(t, m.ApplyNoise(ctx, spec))
		a, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 5})
		require.NoError(t, err)
		require.NoError(t, m.ApplyNoise(ctx, spec))
		b, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 5})
		require.NoError(t, err)
		assert.Equal(t, a, b, "the same seed gives the same noise")
		assert.NotEqual(t, pred.AnswerProb, a.AnswerProb, "noise changes the model")
		require.NoError(t, m.RemoveNoise(ctx))
		clean, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 5})
		require.NoError(t, err)
		assert.Equal(t, pred.AnswerProb, clean.AnswerProb, "noise is removed bit-exactly")
	})

	t.Run("save", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "saved")
		require.NoError(t, m.Save(ctx, dir))
		assert.FileExists(t, filepath.Join(dir, "config.json"))
	})

	t.Run("invalid input", func(t *testing.T) {
		invalid := map[string]func() error{
			"empty prompt": func() error {
				_, err := m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: ""}})
				return err
			},
			"layer out of range": func() error {
				_, err := m.Gradients(ctx, sdk.GradientsRequest{Query: q, Layer: info.Layers, Alphas: []float32{1}})
				return err
			},
			"negative layer": func() error {
				_, err := m.Activations(ctx, sdk.ActivationsRequest{Query: q, Layers: []int{-1}})
				return err
			},
			"no alphas": func() error {
				_, err := m.Gradients(ctx, sdk.GradientsRequest{Query: q, Layer: 0})
				return err
			},
			"empty answer": func() error {
				_, err := m.Gradients(ctx, sdk.GradientsRequest{Query: sdk.Query{Prompt: c.Prompt}, Layer: 0, Alphas: []float32{1}})
				return err
			},
			"neuron out of range": func() error {
				_, err := m.ValueSlots(ctx, 0, []int{info.FFNWidth})
				return err
			},
			"negative sigma": func() error { return m.ApplyNoise(ctx, sdk.NoiseSpec{Sigma: -1}) },
			"unknown edit":   func() error { return m.UndoEdit(ctx, 987654) },
		}
		for name, call := range invalid {
			err := call()
			assert.ErrorIs(t, err, sdk.ErrInvalidInput, name)
		}
	})
}

// Option adjusts the attributor checks.
type Option func(*attrConfig)

type attrConfig struct {
	peers func(sdk.Model) sdk.AttributorSource
}

// WithPeers gives methods that wrap a base method (sdk.Options.Peers) an
// attributor source over the model under test.
func WithPeers(peers func(sdk.Model) sdk.AttributorSource) Option {
	return func(c *attrConfig) { c.peers = peers }
}

// AttributorPlugin launches the attributor plugin binary at path and runs
// Attributor on it, lending it a toy model through the plugin broker.
func AttributorPlugin(t *testing.T, path string, opts ...Option) {
	t.Helper()
	proc, err := sdk.Launch(context.Background(), path, sdk.KindAttributor, sdk.LaunchOptions{CallTimeout: 5 * time.Minute, Stderr: os.Stderr})
	require.NoError(t, err)
	t.Cleanup(proc.Close)
	a := proc.Attributor()
	require.NotNil(t, a, "plugin %s did not dispense an attributor", path)
	Attributor(t, a, opts...)
}

// Attributor checks an attribution method on a toy model whose weights it
// knows: results have the right shape, are deterministic, honour the layer
// selection, are the same for a prompt alone and within a fact
// (sdk.AttributeFact) with the default options, do not leave the model
// changed, and reject bad input.
func Attributor(t *testing.T, a sdk.Attributor, opts ...Option) {
	t.Helper()
	var cfg attrConfig
	for _, o := range opts {
		o(&cfg)
	}
	ctx := context.Background()
	info, err := a.Info(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, info.Name)
	for _, o := range info.Options {
		require.NotEmpty(t, o.Name)
		require.NotEmpty(t, o.Help, "option %s has no help", o.Name)
	}
	toy := sdktest.NewToy(3, 16, 32, 11)
	q := sdk.AttributionQuery{Query: sdk.Query{Prompt: "the capital of france is", Answer: "paris"}}
	options := func(values map[string]string) sdk.Options {
		o := sdk.Options{Values: values}
		if cfg.peers != nil {
			o.Peers = cfg.peers(toy)
		}
		return o
	}
	before, err := toy.Predict(ctx, sdk.PredictRequest{Query: q.Query, TopK: 3})
	require.NoError(t, err)

	res, err := a.Attribute(ctx, toy, q, options(nil))
	require.NoError(t, err)
	require.Equal(t, []int{0, 1, 2}, res.Layers)
	require.Len(t, res.Scores, 3)
	for _, row := range res.Scores {
		require.Len(t, row, 16)
		for _, x := range row {
			require.False(t, math.IsNaN(float64(x)) || math.IsInf(float64(x), 0), "finite scores")
		}
	}
	again, err := a.Attribute(ctx, toy, q, options(nil))
	require.NoError(t, err)
	assert.Equal(t, res.Scores, again.Scores, "deterministic")

	sub, err := a.Attribute(ctx, toy, sdk.AttributionQuery{Query: q.Query, Layers: []int{2}}, options(nil))
	require.NoError(t, err)
	require.Equal(t, []int{2}, sub.Layers)
	assert.InDeltaSlice(t, toF64(res.Scores[2]), toF64(sub.Scores[0]), 1e-6, "layer subset gives the same scores")

	// A fact's prompts in one call (sdk.AttributeFact, which uses the
	// method's own AttributeFact when it has one): one result per prompt,
	// in order, each what the prompt gets alone.
	q2 := sdk.AttributionQuery{Query: sdk.Query{Prompt: "france has the capital", Answer: "paris"}}
	fact, err := sdk.AttributeFact(ctx, a, toy, []sdk.AttributionQuery{q, q2}, options(nil))
	require.NoError(t, err)
	require.Len(t, fact, 2)
	assert.Equal(t, res.Scores, fact[0].Scores, "AttributeFact: the first prompt's scores are its own")
	alone, err := a.Attribute(ctx, toy, q2, options(nil))
	require.NoError(t, err)
	assert.Equal(t, alone.Scores, fact[1].Scores, "AttributeFact: the second prompt's scores are its own")
	_, err = sdk.AttributeFact(ctx, a, toy, []sdk.AttributionQuery{q, {Query: sdk.Query{Prompt: "x"}}}, options(nil))
	assert.ErrorIs(t, err, sdk.ErrInvalidInput, "AttributeFact: a prompt without an answer")

	after, err := toy.Predict(ctx, sdk.PredictRequest{Query: q.Query, TopK: 3})
	require.NoError(t, err)
	assert.Equal(t, before, after, "the model is left as it was")

	_, err = a.Attribute(ctx, toy, sdk.AttributionQuery{Query: q.Query, Layers: []int{9}}, options(nil))
	assert.ErrorIs(t, err, sdk.ErrInvalidInput, "layer out of range")
	_, err = a.Attribute(ctx, toy, sdk.AttributionQuery{Query: sdk.Query{Prompt: "x"}}, options(nil))
	assert.ErrorIs(t, err, sdk.ErrInvalidInput, "no answer")
	_, err = a.Attribute(ctx, toy, q, options(map[string]string{"no-such-option": "1"}))
	assert.ErrorIs(t, err, sdk.ErrInvalidInput, "unknown option")
}

func toF64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}
