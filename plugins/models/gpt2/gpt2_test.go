package gpt2

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/knctl/knctl/plugins/models/checkpoint"
	"github.com/knctl/knctl/sdk"
)

const fixture = "../../../testdata/gpt2-tiny"

// reference is the part of testdata/gpt2-tiny/reference.json (written by
// HuggingFace transformers and the EleutherAI knowledge-neurons library) the
// tests use.
type reference struct {
	Facts []struct {
		Target    string  `json:"target"`
		TargetID  int     `json:"target_id"`
		KNRefined [][]int `json:"kn_refined"`
		Prompts   []struct {
			Text     string      `json:"text"`
			InputIDs []int       `json:"input_ids"`
			Tokens   []string    `json:"tokens"`
			Position int         `json:"position"`
			Logits   []float64   `json:"logits"`
			TargetP  float64     `json:"target_prob"`
			Top10    []topEntry  `json:"top10"`
			FFNPre   [][]float64 `json:"ffn_pre"`
			FFNPost  [][]float64 `json:"ffn_post"`
			KNScores [][]float64 `json:"kn_scores"`
			IGPost   [][]float64 `json:"ig_post"`
			Suppress effect      `json:"suppress"`
			Enhance  effect      `json:"enhance"`
		} `json:"prompts"`
	} `json:"facts"`
}

type topEntry struct {
	ID    int     `json:"id"`
	Token string  `json:"token"`
	Prob  float64 `json:"prob"`
}

type effect struct {
	Before struct {
		GTProb float64 `json:"gt_prob"`
	} `json:"before"`
	After struct {
		GTProb float64 `json:"gt_prob"`
	} `json:"after"`
}

func loadReference(t testing.TB) reference {
	b, err := os.ReadFile(filepath.Join(fixture, "reference.json"))
	require.NoError(t, err)
	var r reference
	require.NoError(t, json.Unmarshal(b, &r))
	require.NotEmpty(t, r.Facts)
	return r
}

// openVariant copies the fixture keeping only one weight file, so each
// format is tested on its own.
func openVariant(t testing.TB, weights string) *Model {
	dir := t.TempDir()
	entries, err := os.ReadDir(fixture)
	require.NoError(t, err)
	for _, e := range entries {
		n := e.Name()
		if (n == "model.safetensors" || n == "pytorch_model.bin") && n != weights {
			continue
		}
		b, err := os.ReadFile(filepath.Join(fixture, n))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, n), b, 0o644))
	}
	m, err := Open(dir)
	require.NoError(t, err)
	t.Cleanup(m.Close)
	return m
}

func maxAbs(rows [][]float64) float64 {
	var m float64
	for _, r := range rows {
		for _, x := range r {
			m = math.Max(m, math.Abs(x))
		}
	}
	return m
}

func TestParityWithTransformers(t *testing.T) {
	ref := loadReference(t)
	ctx := context.Background()
	for _, weights := range []string{"model.safetensors", "pytorch_model.bin"} {
		t.Run(weights, func(t *testing.T) {
			m := openVariant(t, weights)
			info, _ := m.Info(ctx)
			for _, f := range ref.Facts {
				for _, p := range f.Prompts {
					q := sdk.Query{Prompt: p.Text, Answer: f.Target}
					pred, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: info.VocabSize})
					require.NoError(t, err)
					assert.Equal(t, p.InputIDs, pred.InputIDs, p.Text)
					assert.Equal(t, p.Tokens, pred.Tokens, p.Text)
					assert.Equal(t, []int{p.Position}, pred.TargetPositions)
					assert.Equal(t, []int{f.TargetID}, pred.AnswerIDs)
					assert.InEpsilon(t, p.TargetP, pred.AnswerProb, 1e-4, p.Text)
					require.Len(t, pred.Top, len(p.Logits))
					var worst float64
					for _, tp := range pred.Top {
						worst = math.Max(worst, math.Abs(tp.Logit-p.Logits[tp.ID]))
					}
					assert.Less(t, worst, 1e-4, "logits of %q", p.Text)
					for i, want := range p.Top10 {
						assert.Equal(t, want.ID, pred.Top[i].ID, "top-10 rank %d of %q", i, p.Text)
					}

					for hook, want := range map[sdk.Hook][][]float64{sdk.HookPre: p.FFNPre, sdk.HookPost: p.FFNPost} {
						act, err := m.Activations(ctx, sdk.ActivationsRequest{Query: sdk.Query{Prompt: p.Text}, Hook: hook})
						require.NoError(t, err)
						require.Len(t, act.Values, len(want))
						for l := range want {
							for i, x := range want[l] {
								require.InDelta(t, x, act.Values[l][0][i], 1e-4, "%s activation %d:%d of %q", hook, l, i, p.Text)
							}
						}
					}
				}
			}
		})
	}
}

// eleutherAIScores computes attribution with the EleutherAI convention:
// alphas = linspace(0, 1, steps), score = w * sum_k grad_k / steps.
func eleutherAIScores(t testing.TB, m *Model, q sdk.Query, layer int, hook sdk.Hook, steps int) []float64 {
	alphas := make([]float32, steps)
	for k := range alphas {
		alphas[k] = float32(float64(k) / float64(steps-1))
	}
	g, err := m.Gradients(context.Background(), sdk.GradientsRequest{Query: q, Layer: layer, Hook: hook, Alphas: alphas})
	require.NoError(t, err)
	out := make([]float64, g.Width)
	for i := range out {
		var s float64
		for k := range alphas {
			s += float64(g.Grads[k][i])
		}
		out[i] = float64(g.Activation[i]) * s / float64(steps)
	}
	return out
}

func TestIntegratedGradientsMatchReference(t *testing.T) {
	ref := loadReference(t)
	m := openVariant(t, "model.safetensors")
	for _, f := range ref.Facts {
		for _, p := range f.Prompts {
			q := sdk.Query{Prompt: p.Text, Answer: f.Target}
			for hook, want := range map[sdk.Hook][][]float64{sdk.HookPost: p.IGPost, sdk.HookPre: p.KNScores} {
				tol := 1e-5 * maxAbs(want)
				for l := range want {
					got := eleutherAIScores(t, m, q, l, hook, 20)
					for i := range want[l] {
						require.InDelta(t, want[l][i], got[i], tol, "%s IG %d:%d of %q", hook, l, i, p.Text)
					}
				}
			}
		}
	}
}

func TestFastGradientsEqualFullRecomputation(t *testing.T) {
	m := openVariant(t, "model.safetensors")
	alphas := []float32{0, 0.1, 0.35, 0.5, 0.8, 1}
	queries := []sdk.Query{
		{Prompt: "The capital of France is", Answer: " Paris"},
		{Prompt: "A", Answer: " B"}, // target at position 0: nothing cached before it
		{Prompt: "The Eiffel Tower is located in the city of", Answer: " Paris, France"},
	}
	for _, q := range queries {
		for _, hook := range []sdk.Hook{sdk.HookPost, sdk.HookPre} {
			for l := 0; l < 2; l++ {
				req := sdk.GradientsRequest{Query: q, Layer: l, Hook: hook, Alphas: alphas}
				fast, err := m.gradients(req, true)
				require.NoError(t, err)
				full, err := m.gradients(req, false)
				require.NoError(t, err)
				var scale float64
				for _, row := range full.Grads {
					for _, x := range row {
						scale = math.Max(scale, math.Abs(float64(x)))
					}
				}
				for k := range alphas {
					assert.InEpsilon(t, full.Probs[k], fast.Probs[k], 1e-5)
					for i := range full.Grads[k] {
						require.InDelta(t, full.Grads[k][i], fast.Grads[k][i], 1e-5*scale, "%q %s layer %d alpha %g neuron %d", q.Prompt, hook, l, alphas[k], i)
					}
				}
			}
		}
	}
}

func TestMultiTokenAnswerIsTeacherForced(t *testing.T) {
	m := openVariant(t, "model.safetensors")
	ctx := context.Background()
	joint, err := m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: "The capital of France is", Answer: " Paris, France"}})
	require.NoError(t, err)
	require.Greater(t, len(joint.AnswerIDs), 1)
	// The product of next-token probabilities, each asked separately.
	prompt, want := "The capital of France is", 1.0
	for _, tok := range joint.AnswerTokens {
		text := strings.ReplaceAll(tok, "Ġ", " ")
		p, err := m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: prompt, Answer: text}})
		require.NoError(t, err)
		require.Len(t, p.AnswerIDs, 1)
		want *= p.AnswerProb
		prompt += text
	}
	assert.InEpsilon(t, want, joint.AnswerProb, 1e-4)

	// At alpha = 1 the IG primitive evaluates the unmodified model.
	g, err := m.Gradients(ctx, sdk.GradientsRequest{Query: sdk.Query{Prompt: "The capital of France is", Answer: " Paris, France"}, Layer: 0, Alphas: []float32{1}})
	require.NoError(t, err)
	assert.InEpsilon(t, joint.AnswerProb, g.Probs[0], 1e-4)
}

func TestInterventionsMatchEleutherAI(t *testing.T) {
	ref := loadReference(t)
	m := openVariant(t, "model.safetensors")
	ctx := context.Background()
	for _, f := range ref.Facts {
		if len(f.KNRefined) == 0 {
			continue
		}
		for _, p := range f.Prompts {
			q := sdk.Query{Prompt: p.Text, Answer: f.Target}
			for _, c := range []struct {
				op    sdk.InterventionOp
				value float32
				want  float64
			}{{sdk.OpSet, 0, p.Suppress.After.GTProb}, {sdk.OpScale, 2, p.Enhance.After.GTProb}} {
				var ivs []sdk.Intervention
				for _, n := range f.KNRefined {
					ivs = append(ivs, sdk.Intervention{Layer: n[0], Neuron: n[1], Hook: sdk.HookPre, Op: c.op, Value: c.value})
				}
				pred, err := m.Predict(ctx, sdk.PredictRequest{Query: q, Interventions: ivs})
				require.NoError(t, err)
				assert.InEpsilon(t, c.want, pred.AnswerProb, 1e-4, "%s on %q", c.op, p.Text)
			}
		}
	}
	// Scaling by one and setting a neuron to its own value change nothing.
	q := sdk.Query{Prompt: "The capital of France is", Answer: " Paris"}
	base, err := m.Predict(ctx, sdk.PredictRequest{Query: q})
	require.NoError(t, err)
	act, err := m.Activations(ctx, sdk.ActivationsRequest{Query: q, Layers: []int{1}})
	require.NoError(t, err)
	same, err := m.Predict(ctx, sdk.PredictRequest{Query: q, Interventions: []sdk.Intervention{
		{Layer: 0, Neuron: 3, Hook: sdk.HookPost, Op: sdk.OpScale, Value: 1},
		{Layer: 1, Neuron: 7, Hook: sdk.HookPost, Op: sdk.OpSet, Value: act.Values[0][0][7]},
	}})
	require.NoError(t, err)
	assert.InEpsilon(t, base.AnswerProb, same.AnswerProb, 1e-6)
}

func TestValueSlotEditsUndoBitExact(t *testing.T) {
	m := openVariant(t, "model.safetensors")
	ctx := context.Background()
	q := sdk.Query{Prompt: "The capital of France is", Answer: " Paris"}

	// The value slot of neuron i is row i of mlp.c_proj.weight ([FFN, n_embd]).
	st, err := checkpoint.OpenSafetensors(filepath.Join(fixture, "model.safetensors"))
	require.NoError(t, err)
	defer st.Close()
	raw, _, err := st.Float32("transformer.h.1.mlp.c_proj.weight")
	require.NoError(t, err)
	slots, err := m.ValueSlots(ctx, 1, []int{5, 200})
	require.NoError(t, err)
	require.Len(t, slots, 2)
	require.Len(t, slots[0], 64)
	assert.Equal(t, float32frombytes(raw[4*64*200:4*64*201]), slots[1])

	before, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 5})
	require.NoError(t, err)
	zero := [][]float32{make([]float32, 64), make([]float32, 64)}
	id, err := m.SetValueSlots(ctx, 1, []int{5, 200}, zero)
	require.NoError(t, err)
	got, err := m.ValueSlots(ctx, 1, []int{5, 200})
	require.NoError(t, err)
	assert.Equal(t, zero, got)
	edited, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 5})
	require.NoError(t, err)
	assert.NotEqual(t, before.AnswerProb, edited.AnswerProb)

	// Edits cannot be undone out of order on the same weights.
	id2, err := m.SetValueSlots(ctx, 1, []int{5}, [][]float32{slots[0]})
	require.NoError(t, err)
	assert.ErrorIs(t, m.UndoEdit(ctx, id), sdk.ErrInvalidInput)
	require.NoError(t, m.UndoEdit(ctx, id2))
	require.NoError(t, m.UndoEdit(ctx, id))
	assert.ErrorIs(t, m.UndoEdit(ctx, id), sdk.ErrInvalidInput)

	restored, err := m.ValueSlots(ctx, 1, []int{5, 200})
	require.NoError(t, err)
	assert.Equal(t, slots, restored)
	after, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 5})
	require.NoError(t, err)
	assert.Equal(t, before, after)

	_, err = m.SetValueSlots(ctx, 1, []int{256}, zero[:1])
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
	_, err = m.SetValueSlots(ctx, 1, []int{3}, [][]float32{make([]float32, 10)})
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
	_, err = m.ValueSlots(ctx, 2, []int{0})
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
}

func float32frombytes(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24)
	}
	return out
}

func TestNoiseIsSeededAndUndoneBitExact(t *testing.T) {
	m := openVariant(t, "model.safetensors")
	ctx := context.Background()
	q := sdk.Query{Prompt: "The capital of France is", Answer: " Paris"}
	clean, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 20})
	require.NoError(t, err)
	cleanAct, err := m.Activations(ctx, sdk.ActivationsRequest{Query: q})
	require.NoError(t, err)

	predictWith := func(spec sdk.NoiseSpec) sdk.Prediction {
		require.NoError(t, m.ApplyNoise(ctx, spec))
		p, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 20})
		require.NoError(t, err)
		return p
	}
	a := predictWith(sdk.NoiseSpec{Seed: 1, Sigma: 0.05})
	b := predictWith(sdk.NoiseSpec{Seed: 1, Sigma: 0.05})
	c := predictWith(sdk.NoiseSpec{Seed: 2, Sigma: 0.05})
	assert.Equal(t, a, b, "same seed, same noise")
	assert.NotEqual(t, a.AnswerProb, c.AnswerProb, "different seeds differ")
	assert.NotEqual(t, clean.AnswerProb, a.AnswerProb)
	_, err = m.SetValueSlots(ctx, 0, []int{1}, [][]float32{make([]float32, 64)})
	assert.ErrorIs(t, err, sdk.ErrInvalidInput, "no weight edit under noise")

	ffnOnly := predictWith(sdk.NoiseSpec{Seed: 1, Sigma: 0.05, Scope: sdk.ScopeFFN})
	assert.NotEqual(t, a.AnswerProb, ffnOnly.AnswerProb)
	zero := predictWith(sdk.NoiseSpec{Seed: 3, Sigma: 0})
	assert.Equal(t, clean, zero, "sigma 0 leaves the model unchanged")

	require.NoError(t, m.RemoveNoise(ctx))
	after, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 20})
	require.NoError(t, err)
	assert.Equal(t, clean, after, "bit-exact after RemoveNoise")
	afterAct, err := m.Activations(ctx, sdk.ActivationsRequest{Query: q})
	require.NoError(t, err)
	assert.Equal(t, cleanAct, afterAct)

	assert.ErrorIs(t, m.ApplyNoise(ctx, sdk.NoiseSpec{Sigma: -1}), sdk.ErrInvalidInput)
	assert.ErrorIs(t, m.ApplyNoise(ctx, sdk.NoiseSpec{Sigma: 1, Mode: "wild"}), sdk.ErrInvalidInput)
}

func TestSaveReloadsWithEdit(t *testing.T) {
	m := openVariant(t, "model.safetensors")
	ctx := context.Background()
	q := sdk.Query{Prompt: "The capital of France is", Answer: " Paris"}
	_, err := m.SetValueSlots(ctx, 0, []int{11}, [][]float32{make([]float32, 64)})
	require.NoError(t, err)
	edited, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 5})
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "edited")
	require.NoError(t, m.Save(ctx, dir))
	for _, f := range []string{"config.json", "model.safetensors", "vocab.json", "merges.txt"} {
		assert.FileExists(t, filepath.Join(dir, f))
	}
	st, err := checkpoint.OpenSafetensors(filepath.Join(dir, "model.safetensors"))
	require.NoError(t, err)
	_, hasHead := st.Info("lm_head.weight")
	_, hasWTE := st.Info("transformer.wte.weight")
	st.Close()
	assert.False(t, hasHead, "tied lm_head omitted, as transformers does")
	assert.True(t, hasWTE)

	re, err := Open(dir)
	require.NoError(t, err)
	defer re.Close()
	got, err := re.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 5})
	require.NoError(t, err)
	assert.Equal(t, edited, got)
	assert.ErrorIs(t, m.Save(ctx, ""), sdk.ErrInvalidInput)
}

func TestBadInput(t *testing.T) {
	ctx := context.Background()
	copyFixture := func(t *testing.T, edit func(dir string)) string {
		dir := t.TempDir()
		entries, err := os.ReadDir(fixture)
		require.NoError(t, err)
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(fixture, e.Name()))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644))
		}
		edit(dir)
		return dir
	}
	setConfig := func(key string, value any) func(string) {
		return func(dir string) {
			path := filepath.Join(dir, "config.json")
			b, _ := os.ReadFile(path)
			var c map[string]any
			require.NoError(t, json.Unmarshal(b, &c))
			c[key] = value
			b, _ = json.Marshal(c)
			require.NoError(t, os.WriteFile(path, b, 0o644))
		}
	}
	cases := []struct {
		name string
		dir  func(t *testing.T) string
		msg  string
	}{
		{"missing directory", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") }, "nope"},
		{"truncated safetensors", func(t *testing.T) string {
			return copyFixture(t, func(dir string) {
				p := filepath.Join(dir, "model.safetensors")
				b, _ := os.ReadFile(p)
				require.NoError(t, os.WriteFile(p, b[:len(b)-1000], 0o644))
			})
		}, "truncated"},
		{"corrupt pickle", func(t *testing.T) string {
			return copyFixture(t, func(dir string) {
				os.Remove(filepath.Join(dir, "model.safetensors"))
				require.NoError(t, os.WriteFile(filepath.Join(dir, "pytorch_model.bin"), []byte("not a zip"), 0o644))
			})
		}, "pytorch_model.bin"},
		{"wrong shapes", func(t *testing.T) string { return copyFixture(t, setConfig("n_inner", 128)) }, "expected [64 128]"},
		{"unsupported model_type", func(t *testing.T) string { return copyFixture(t, setConfig("model_type", "llama")) }, `"llama"`},
		{"unsupported activation", func(t *testing.T) string { return copyFixture(t, setConfig("activation_function", "gelu_42")) }, "gelu_42"},
		{"no weights", func(t *testing.T) string {
			return copyFixture(t, func(dir string) {
				os.Remove(filepath.Join(dir, "model.safetensors"))
				os.Remove(filepath.Join(dir, "pytorch_model.bin"))
			})
		}, "no model.safetensors or pytorch_model.bin"},
		{"no tokenizer", func(t *testing.T) string {
			return copyFixture(t, func(dir string) { os.Remove(filepath.Join(dir, "merges.txt")) })
		}, "merges"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := c.dir(t)
			_, err := Open(dir)
			require.Error(t, err)
			assert.ErrorIs(t, err, sdk.ErrInvalidInput)
			assert.Contains(t, err.Error(), c.msg)
		})
	}

	m := openVariant(t, "model.safetensors")
	long := strings.Repeat("word ", 70)
	queryCases := []struct {
		name string
		call func() error
		msg  string
	}{
		{"empty prompt", func() error {
			_, err := m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: "  "}})
			return err
		}, "prompt"},
		{"prompt longer than n_positions", func() error {
			_, err := m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: long}})
			return err
		}, "n_positions=64"},
		{"empty answer", func() error {
			_, err := m.Gradients(ctx, sdk.GradientsRequest{Query: sdk.Query{Prompt: "The capital of France is"}, Alphas: []float32{1}})
			return err
		}, "answer"},
		{"layer out of range", func() error {
			_, err := m.Gradients(ctx, sdk.GradientsRequest{Query: sdk.Query{Prompt: "a", Answer: " b"}, Layer: 2, Alphas: []float32{1}})
			return err
		}, "layers 0..1"},
		{"no alphas", func() error {
			_, err := m.Gradients(ctx, sdk.GradientsRequest{Query: sdk.Query{Prompt: "a", Answer: " b"}})
			return err
		}, "alphas"},
		{"baseline of wrong length", func() error {
			_, err := m.Gradients(ctx, sdk.GradientsRequest{Query: sdk.Query{Prompt: "a", Answer: " b"}, Alphas: []float32{1}, Baseline: make([]float32, 3)})
			return err
		}, "baseline"},
		{"bad hook", func() error {
			_, err := m.Activations(ctx, sdk.ActivationsRequest{Query: sdk.Query{Prompt: "a"}, Hook: "mid"})
			return err
		}, "hook"},
		{"intervention out of range", func() error {
			_, err := m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: "a"}, Interventions: []sdk.Intervention{{Layer: 0, Neuron: 999, Op: sdk.OpSet}}})
			return err
		}, "neurons 0..255"},
		{"token id out of range", func() error {
			_, err := m.Embeddings(ctx, []int{1 << 20})
			return err
		}, "token id"},
	}
	for _, c := range queryCases {
		t.Run(c.name, func(t *testing.T) {
			err := c.call()
			require.Error(t, err)
			assert.ErrorIs(t, err, sdk.ErrInvalidInput)
			assert.Contains(t, err.Error(), c.msg)
		})
	}
	// The model still works after all that.
	_, err := m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: "The capital of France is", Answer: " Paris"}})
	require.NoError(t, err)
}

func TestRandomInit(t *testing.T) {
	ctx := context.Background()
	m, err := Load(ctx, sdk.LoadRequest{Checkpoint: fixture, Options: map[string]string{"init": "random", "seed": "3"}})
	require.NoError(t, err)
	defer m.(*Model).Close()
	again, err := OpenRandom(fixture, 3)
	require.NoError(t, err)
	defer again.Close()
	q := sdk.Query{Prompt: "The capital of France is", Answer: " Paris"}
	a, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 3})
	require.NoError(t, err)
	b, err := again.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 3})
	require.NoError(t, err)
	assert.Equal(t, a, b, "the seed fixes the weights")
	trained := openVariant(t, "model.safetensors")
	c, err := trained.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 3})
	require.NoError(t, err)
	assert.NotEqual(t, a.AnswerProb, c.AnswerProb)
	slots, err := m.ValueSlots(ctx, 0, []int{0})
	require.NoError(t, err)
	var sq float64
	for _, x := range slots[0] {
		sq += float64(x) * float64(x)
	}
	assert.InDelta(t, 0.02, math.Sqrt(sq/float64(len(slots[0]))), 0.01, "weights drawn with std 0.02")

	for _, opts := range []map[string]string{{"init": "zeros"}, {"seed": "x"}, {"threads": "0"}, {"colour": "blue"}} {
		_, err := Load(ctx, sdk.LoadRequest{Checkpoint: fixture, Options: opts})
		assert.ErrorIs(t, err, sdk.ErrInvalidInput, "%v", opts)
	}
}
