package bert

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
	"gonum.org/v1/gonum/integrate/quad"

	"github.com/knctl/knctl/plugins/models/checkpoint"
	"github.com/knctl/knctl/plugins/models/torch"
	"github.com/knctl/knctl/sdk"
)

const fixture = "../../../testdata/bert-tiny"

// reference is the part of testdata/bert-tiny/reference.json (written by
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

// copyFixture copies the fixture into a fresh directory, leaving out the
// files skip names, and lets edit change the copy.
func copyFixture(t testing.TB, skip func(name string) bool, edit func(dir string)) string {
	dir := t.TempDir()
	entries, err := os.ReadDir(fixture)
	require.NoError(t, err)
	for _, e := range entries {
		n := e.Name()
		if skip != nil && skip(n) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(fixture, n))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, n), b, 0o644))
	}
	if edit != nil {
		edit(dir)
	}
	return dir
}

// openVariant opens a copy of the fixture keeping only one weight file, so
// each format is tested on its own.
func openVariant(t testing.TB, weights string) *Model {
	dir := copyFixture(t, func(n string) bool {
		return (n == "model.safetensors" || n == "pytorch_model.bin") && n != weights
	}, nil)
	m, err := Open(dir)
	require.NoError(t, err)
	t.Cleanup(m.Close)
	return m
}

// editConfig returns an edit that sets config.json's key to value.
func editConfig(t testing.TB, key string, value any) func(string) {
	return func(dir string) {
		path := filepath.Join(dir, "config.json")
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		var c map[string]any
		require.NoError(t, json.Unmarshal(b, &c))
		c[key] = value
		b, err = json.Marshal(c)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, b, 0o644))
	}
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
						assert.Equal(t, want.Token, pred.Top[i].Token, "top-10 rank %d of %q", i, p.Text)
						assert.InEpsilon(t, want.Prob, pred.Top[i].Prob, 1e-4)
					}

					for hook, want := range map[sdk.Hook][][]float64{sdk.HookPre: p.FFNPre, sdk.HookPost: p.FFNPost} {
						act, err := m.Activations(ctx, sdk.ActivationsRequest{Query: sdk.Query{Prompt: p.Text}, Hook: hook})
						require.NoError(t, err)
						assert.Equal(t, []int{p.Position}, act.Positions)
						require.Len(t, act.Values, len(want))
						for l := range want {
							require.Len(t, act.Values[l], 1)
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

// alphasLinspace is EleutherAI's quadrature: linspace(0, 1, steps).
func alphasLinspace(steps int) []float32 {
	alphas := make([]float32, steps)
	for k := range alphas {
		alphas[k] = float32(float64(k) / float64(steps-1))
	}
	return alphas
}

// eleutherAIScores computes attribution with the EleutherAI convention:
// alphas = linspace(0, 1, steps), score = w * sum_k grad_k / steps.
func eleutherAIScores(t testing.TB, m *Model, q sdk.Query, layer int, hook sdk.Hook, steps int) []float64 {
	alphas := alphasLinspace(steps)
	g, err := m.Gradients(context.Background(), sdk.GradientsRequest{Query: q, Layer: layer, Hook: hook, Alphas: alphas})
	require.NoError(t, err)
	require.Equal(t, 1, g.Positions)
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
			// EleutherAI hooks BERT's intermediate output, the
			// post-activation neurons: kn_scores and ig_post agree.
			for name, want := range map[string][][]float64{"kn_scores": p.KNScores, "ig_post": p.IGPost} {
				tol := 1e-5 * maxAbs(want)
				for l := range want {
					got := eleutherAIScores(t, m, q, l, sdk.HookPost, 20)
					for i := range want[l] {
						require.InDelta(t, want[l][i], got[i], tol, "%s %d:%d of %q", name, l, i, p.Text)
					}
				}
			}
		}
	}
}

// deepRandom is a 4-layer BERT with random weights on the fixture's
// tokenizer, so that the fast path's recomputation of middle layers for
// every position is exercised (bert-tiny has only 2 layers). Its
// initializer_range (0.15) makes P(answer) vary with alpha while keeping
// float32 round-off (measured by running the alphas one at a time instead
// of batched) near 1e-6 of the largest gradient.
func deepRandom(t testing.TB) *Model {
	dir := copyFixture(t, func(n string) bool { return strings.HasSuffix(n, ".bin") || strings.HasSuffix(n, ".safetensors") }, func(dir string) {
		editConfig(t, "num_hidden_layers", 4)(dir)
		editConfig(t, "initializer_range", 0.15)(dir)
	})
	m, err := OpenRandom(dir, 5)
	require.NoError(t, err)
	t.Cleanup(m.Close)
	return m
}

func TestFastGradientsEqualFullRecomputation(t *testing.T) {
	queries := []sdk.Query{
		{Prompt: "The capital of France is [MASK].", Answer: "paris"},
		{Prompt: "[MASK] is the capital of France.", Answer: "paris"},      // target right after [CLS]
		{Prompt: "The capital of France is [MASK]", Answer: "paris"},       // target right before [SEP]
		{Prompt: "Zorvia's capital is [MASK].", Answer: "kelmar"},          // six word pieces, six masks
		{Prompt: "The capital city of [MASK] is Paris.", Answer: "france"}, // mask mid-sentence
	}
	alphas := []float32{0, 0.1, 0.35, 0.5, 0.8, 1}
	for name, m := range map[string]*Model{"bert-tiny": openVariant(t, "model.safetensors"), "4 random layers": deepRandom(t)} {
		t.Run(name, func(t *testing.T) {
			for _, q := range queries {
				for _, hook := range []sdk.Hook{sdk.HookPost, sdk.HookPre} {
					for l := 0; l < m.cfg.NumHiddenLayers; l++ {
						req := sdk.GradientsRequest{Query: q, Layer: l, Hook: hook, Alphas: alphas}
						fast, err := m.gradients(req, true)
						require.NoError(t, err)
						full, err := m.gradients(req, false)
						require.NoError(t, err)
						require.Equal(t, full.Positions, fast.Positions)
						assert.Equal(t, full.Activation, fast.Activation)
						var scale float64
						for _, row := range full.Grads {
							for _, x := range row {
								scale = math.Max(scale, math.Abs(float64(x)))
							}
						}
						require.Positive(t, scale)
						for k := range alphas {
							assert.InEpsilon(t, full.Probs[k], fast.Probs[k], 1e-5)
							for i := range full.Grads[k] {
								require.InDelta(t, full.Grads[k][i], fast.Grads[k][i], 1e-5*scale, "%q %s layer %d alpha %g value %d", q.Prompt, hook, l, alphas[k], i)
							}
						}
					}
				}
			}
			// A baseline and input noise go through both paths alike.
			q := queries[3]
			enc, err := m.encode(q, true)
			require.NoError(t, err)
			base := make([]float32, len(enc.targets)*m.cfg.IntermediateSize)
			for i := range base {
				base[i] = float32(i%7) * 0.01
			}
			req := sdk.GradientsRequest{Query: q, Layer: 0, Alphas: alphas, Baseline: base, InputNoise: &sdk.InputNoise{Sigma: 0.1, Seed: 3}}
			fast, err := m.gradients(req, true)
			require.NoError(t, err)
			full, err := m.gradients(req, false)
			require.NoError(t, err)
			for k := range alphas {
				assert.InEpsilon(t, full.Probs[k], fast.Probs[k], 1e-5)
			}
		})
	}
}

func TestMultiPieceAnswerFillsOneMaskPerPiece(t *testing.T) {
	m := openVariant(t, "model.safetensors")
	ctx := context.Background()
	q := sdk.Query{Prompt: "Zorvia's capital is [MASK].", Answer: "Kelmar"}
	pred, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 5})
	require.NoError(t, err)
	// BertTokenizer (reference.json's tokenization case) splits "kelmar"
	// into k ##e ##l ##m ##a ##r.
	assert.Equal(t, []string{"k", "##e", "##l", "##m", "##a", "##r"}, pred.AnswerTokens)
	assert.Equal(t, []int{57, 77, 84, 85, 73, 90}, pred.AnswerIDs)
	assert.Equal(t, []int{10, 11, 12, 13, 14, 15}, pred.TargetPositions)
	assert.Equal(t, []int{2, 72, 87, 90, 94, 200, 11, 65, 132, 115, 4, 4, 4, 4, 4, 4, 18, 3}, pred.InputIDs)
	prod := 1.0
	for _, p := range pred.AnswerTokenProb {
		prod *= p
	}
	assert.InEpsilon(t, prod, pred.AnswerProb, 1e-12, "joint probability is the product of the pieces'")

	// With all six masks in place, the first mask's distribution differs
	// from the one-mask prompt's: Predict's top-k is taken at the first of
	// the six masks.
	one, err := m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: q.Prompt, Answer: "k"}, TopK: 5})
	require.NoError(t, err)
	assert.NotEqual(t, one.AnswerTokenProb[0], pred.AnswerTokenProb[0])

	// Activations: one row per mask; Gradients: positions x width, the same
	// activations, and P at alpha = 1 is Predict's.
	act, err := m.Activations(ctx, sdk.ActivationsRequest{Query: q, Layers: []int{1}})
	require.NoError(t, err)
	assert.Equal(t, pred.TargetPositions, act.Positions)
	require.Len(t, act.Values[0], 6)
	g, err := m.Gradients(ctx, sdk.GradientsRequest{Query: q, Layer: 1, Alphas: []float32{1}})
	require.NoError(t, err)
	assert.Equal(t, 6, g.Positions)
	assert.Equal(t, 256, g.Width)
	var flat []float32
	for _, row := range act.Values[0] {
		flat = append(flat, row...)
	}
	assert.Equal(t, flat, g.Activation)
	assert.InEpsilon(t, pred.AnswerProb, g.Probs[0], 1e-4)

	// The gradients are those of the joint probability with respect to all
	// six positions' activations: integrated gradients are complete,
	// sum_i w_i * integral dP/dx_i = P(w) - P(0), with 64 Gauss-Legendre
	// nodes.
	for l := 0; l < 2; l++ {
		nodes, weights := make([]float64, 64), make([]float64, 64)
		quad.Legendre{}.FixedLocations(nodes, weights, 0, 1)
		alphas := make([]float32, 0, 66)
		for _, x := range nodes {
			alphas = append(alphas, float32(x))
		}
		gg, err := m.Gradients(ctx, sdk.GradientsRequest{Query: q, Layer: l, Alphas: append(alphas, 0, 1)})
		require.NoError(t, err)
		var total float64
		for i, w := range gg.Activation {
			var s float64
			for k, wk := range weights {
				s += wk * float64(gg.Grads[k][i])
			}
			total += float64(w) * s
		}
		p0, p1 := gg.Probs[64], gg.Probs[65]
		assert.InDelta(t, p1-p0, total, 1e-3*(p1+p0), "IG completeness at layer %d", l)
	}
}

func TestInterventionsMatchEleutherAI(t *testing.T) {
	ref := loadReference(t)
	m := openVariant(t, "model.safetensors")
	ctx := context.Background()
	for _, f := range ref.Facts {
		require.NotEmpty(t, f.KNRefined)
		for _, p := range f.Prompts {
			q := sdk.Query{Prompt: p.Text, Answer: f.Target}
			for _, c := range []struct {
				op    sdk.InterventionOp
				value float32
				want  float64
			}{{sdk.OpSet, 0, p.Suppress.After.GTProb}, {sdk.OpScale, 2, p.Enhance.After.GTProb}} {
				var ivs []sdk.Intervention
				for _, n := range f.KNRefined {
					ivs = append(ivs, sdk.Intervention{Layer: n[0], Neuron: n[1], Hook: sdk.HookPost, Op: c.op, Value: c.value})
				}
				pred, err := m.Predict(ctx, sdk.PredictRequest{Query: q, Interventions: ivs})
				require.NoError(t, err)
				assert.InEpsilon(t, c.want, pred.AnswerProb, 1e-4, "%s on %q", c.op, p.Text)
			}
		}
	}
	// Scaling by one and setting a neuron to its own value change nothing.
	q := sdk.Query{Prompt: "The capital of France is [MASK].", Answer: "paris"}
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

	// With a multi-piece answer an intervention acts at every mask: the
	// pre-activation set to a large value shows up in every row.
	mq := sdk.Query{Prompt: "Zorvia's capital is [MASK].", Answer: "kelmar"}
	plain, err := m.Predict(ctx, sdk.PredictRequest{Query: mq})
	require.NoError(t, err)
	ivs := []sdk.Intervention{{Layer: 1, Neuron: 24, Hook: sdk.HookPre, Op: sdk.OpSet, Value: 5}}
	changed, err := m.Predict(ctx, sdk.PredictRequest{Query: mq, Interventions: ivs})
	require.NoError(t, err)
	for j := range plain.AnswerTokenProb {
		assert.NotEqual(t, plain.AnswerTokenProb[j], changed.AnswerTokenProb[j], "mask %d", j)
	}
}

func float32frombytes(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24)
	}
	return out
}

func TestValueSlotEditsUndoBitExact(t *testing.T) {
	m := openVariant(t, "model.safetensors")
	ctx := context.Background()
	q := sdk.Query{Prompt: "The capital of France is [MASK].", Answer: "paris"}

	// The value slot of neuron i is column i of output.dense.weight
	// ([hidden 64, intermediate 256]).
	st, err := checkpoint.OpenSafetensors(filepath.Join(fixture, "model.safetensors"))
	require.NoError(t, err)
	defer st.Close()
	raw, info, err := st.Float32("bert.encoder.layer.1.output.dense.weight")
	require.NoError(t, err)
	require.Equal(t, []int64{64, 256}, info.Shape)
	w := float32frombytes(raw)
	column := func(i int) []float32 {
		c := make([]float32, 64)
		for r := range c {
			c[r] = w[r*256+i]
		}
		return c
	}
	slots, err := m.ValueSlots(ctx, 1, []int{5, 200})
	require.NoError(t, err)
	require.Len(t, slots, 2)
	assert.Equal(t, column(5), slots[0])
	assert.Equal(t, column(200), slots[1])

	// Embeddings are rows of the word-embedding matrix.
	rawE, _, err := st.Float32("bert.embeddings.word_embeddings.weight")
	require.NoError(t, err)
	emb, err := m.Embeddings(ctx, []int{147, 1})
	require.NoError(t, err)
	assert.Equal(t, float32frombytes(rawE[4*64*147:4*64*148]), emb[0])
	assert.Equal(t, float32frombytes(rawE[4*64*1:4*64*2]), emb[1])

	before, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 5})
	require.NoError(t, err)
	zero := [][]float32{make([]float32, 64), make([]float32, 64)}
	id, err := m.SetValueSlots(ctx, 1, []int{5, 200}, zero)
	require.NoError(t, err)
	got, err := m.ValueSlots(ctx, 1, []int{5, 200})
	require.NoError(t, err)
	assert.Equal(t, zero, got)
	others, err := m.ValueSlots(ctx, 1, []int{4, 6, 199, 201})
	require.NoError(t, err)
	assert.Equal(t, [][]float32{column(4), column(6), column(199), column(201)}, others, "other columns untouched")
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
	_, err = m.SetValueSlots(ctx, 1, []int{3, 3}, zero)
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
	_, err = m.ValueSlots(ctx, 2, []int{0})
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
}

func TestValueSlotIsWhatTheNeuronAdds(t *testing.T) {
	// Zeroing neuron i's activation and zeroing its value slot must give
	// the same prediction: the slot is exactly what the neuron adds.
	m := openVariant(t, "model.safetensors")
	ctx := context.Background()
	q := sdk.Query{Prompt: "The capital of France is [MASK].", Answer: "paris"}
	neurons := []int{11, 24, 252}
	var ivs []sdk.Intervention
	for _, n := range neurons {
		ivs = append(ivs, sdk.Intervention{Layer: 1, Neuron: n, Hook: sdk.HookPost, Op: sdk.OpSet, Value: 0})
	}
	suppressed, err := m.Predict(ctx, sdk.PredictRequest{Query: q, Interventions: ivs})
	require.NoError(t, err)
	// Only the [MASK] row is intervened on, so compare on a prompt whose
	// other positions do not matter: layer 1 is the last layer, and the
	// head reads only the [MASK].
	id, err := m.SetValueSlots(ctx, 1, neurons, [][]float32{make([]float32, 64), make([]float32, 64), make([]float32, 64)})
	require.NoError(t, err)
	erased, err := m.Predict(ctx, sdk.PredictRequest{Query: q})
	require.NoError(t, err)
	require.NoError(t, m.UndoEdit(ctx, id))
	assert.InEpsilon(t, suppressed.AnswerProb, erased.AnswerProb, 1e-5)
}

// weightValues reads a parameter of m's store.
func weightValues(t testing.TB, m *Model, name string) []float32 {
	s := torch.NewScope()
	defer s.Close()
	v := s.Float32s(m.w.Get(name))
	require.NoError(t, s.Err())
	return v
}

func TestNoiseIsSeededAndUndoneBitExact(t *testing.T) {
	m := openVariant(t, "model.safetensors")
	ctx := context.Background()
	q := sdk.Query{Prompt: "The capital of France is [MASK].", Answer: "paris"}
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

	// Scope ffn perturbs intermediate.dense and output.dense, nothing else
	// (not attention.output.dense, not the embeddings).
	attn := weightValues(t, m, "encoder.layer.0.attention.output.dense.weight")
	ffnOnly := predictWith(sdk.NoiseSpec{Seed: 1, Sigma: 0.05, Scope: sdk.ScopeFFN})
	assert.NotEqual(t, a.AnswerProb, ffnOnly.AnswerProb)
	require.NoError(t, m.RemoveNoise(ctx))
	attnClean := weightValues(t, m, "encoder.layer.0.attention.output.dense.weight")
	embClean := weightValues(t, m, wordEmbeddings)
	ffnClean := weightValues(t, m, "encoder.layer.1.output.dense.weight")
	interClean := weightValues(t, m, "encoder.layer.0.intermediate.dense.bias")
	require.NotEqual(t, attnClean, attn, "scope all perturbed attention")
	predictWith(sdk.NoiseSpec{Seed: 1, Sigma: 0.05, Scope: sdk.ScopeFFN})
	assert.Equal(t, attnClean, weightValues(t, m, "encoder.layer.0.attention.output.dense.weight"))
	assert.Equal(t, embClean, weightValues(t, m, wordEmbeddings))
	assert.NotEqual(t, ffnClean, weightValues(t, m, "encoder.layer.1.output.dense.weight"))
	assert.NotEqual(t, interClean, weightValues(t, m, "encoder.layer.0.intermediate.dense.bias"))

	zero := predictWith(sdk.NoiseSpec{Seed: 3, Sigma: 0})
	assert.Equal(t, clean, zero, "sigma 0 leaves the model unchanged")

	require.NoError(t, m.RemoveNoise(ctx))
	after, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 20})
	require.NoError(t, err)
	assert.Equal(t, clean, after, "bit-exact after RemoveNoise")
	afterAct, err := m.Activations(ctx, sdk.ActivationsRequest{Query: q})
	require.NoError(t, err)
	assert.Equal(t, cleanAct, afterAct)
	assert.Equal(t, ffnClean, weightValues(t, m, "encoder.layer.1.output.dense.weight"))

	assert.ErrorIs(t, m.ApplyNoise(ctx, sdk.NoiseSpec{Sigma: -1}), sdk.ErrInvalidInput)
	assert.ErrorIs(t, m.ApplyNoise(ctx, sdk.NoiseSpec{Sigma: 1, Mode: "wild"}), sdk.ErrInvalidInput)
	assert.ErrorIs(t, m.ApplyNoise(ctx, sdk.NoiseSpec{Sigma: 1, Scope: "attention"}), sdk.ErrInvalidInput)
}

func TestSaveReloadsWithEdit(t *testing.T) {
	m := openVariant(t, "pytorch_model.bin")
	ctx := context.Background()
	q := sdk.Query{Prompt: "The capital of France is [MASK].", Answer: "paris"}
	_, err := m.SetValueSlots(ctx, 1, []int{11, 24}, [][]float32{make([]float32, 64), make([]float32, 64)})
	require.NoError(t, err)
	edited, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 5})
	require.NoError(t, err)
	editedMulti, err := m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: "Zorvia's capital is [MASK].", Answer: "kelmar"}, TopK: 5})
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "edited")
	require.NoError(t, m.Save(ctx, dir))
	for _, f := range []string{"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"} {
		assert.FileExists(t, filepath.Join(dir, f))
	}
	st, err := checkpoint.OpenSafetensors(filepath.Join(dir, "model.safetensors"))
	require.NoError(t, err)
	names := st.Names()
	st.Close()
	orig, err := checkpoint.OpenSafetensors(filepath.Join(fixture, "model.safetensors"))
	require.NoError(t, err)
	want := orig.Names()
	orig.Close()
	// The same tensors under the same names as transformers writes: the
	// tied decoder weight and bias are omitted, cls.predictions.bias kept.
	assert.Equal(t, want, names)
	assert.NotContains(t, names, "cls.predictions.decoder.weight")
	assert.Contains(t, names, "cls.predictions.bias")

	re, err := Open(dir)
	require.NoError(t, err)
	defer re.Close()
	got, err := re.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 5})
	require.NoError(t, err)
	assert.Equal(t, edited, got)
	gotMulti, err := re.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: "Zorvia's capital is [MASK].", Answer: "kelmar"}, TopK: 5})
	require.NoError(t, err)
	assert.Equal(t, editedMulti, gotMulti)
	assert.ErrorIs(t, m.Save(ctx, ""), sdk.ErrInvalidInput)
}

// writeRenamed writes the fixture's safetensors into dir with names mapped
// by rename ("" drops a tensor).
func writeRenamed(t testing.TB, dir string, rename func(string) string) {
	st, err := checkpoint.OpenSafetensors(filepath.Join(fixture, "model.safetensors"))
	require.NoError(t, err)
	defer st.Close()
	var out []checkpoint.WriteTensor
	for _, n := range st.Names() {
		nn := rename(n)
		if nn == "" {
			continue
		}
		data, info, err := st.Float32(n)
		require.NoError(t, err)
		out = append(out, checkpoint.WriteTensor{Name: nn, Shape: info.Shape, Data: data})
	}
	require.NoError(t, checkpoint.WriteSafetensors(filepath.Join(dir, "model.safetensors"), out, map[string]string{"format": "pt"}))
}

func TestLegacyCheckpointNames(t *testing.T) {
	// Checkpoints converted from the original TensorFlow BERT name the
	// LayerNorm parameters gamma/beta, and some keep the MLM bias only as
	// cls.predictions.decoder.bias; transformers loads both.
	ctx := context.Background()
	dir := copyFixture(t, func(n string) bool { return strings.HasSuffix(n, ".bin") || strings.HasSuffix(n, ".safetensors") }, func(dir string) {
		writeRenamed(t, dir, func(n string) string {
			switch {
			case n == headBias:
				return headDecoderBias
			case strings.HasSuffix(n, "LayerNorm.weight"):
				return strings.TrimSuffix(n, "weight") + "gamma"
			case strings.HasSuffix(n, "LayerNorm.bias"):
				return strings.TrimSuffix(n, "bias") + "beta"
			}
			return n
		})
	})
	legacy, err := Open(dir)
	require.NoError(t, err)
	defer legacy.Close()
	m := openVariant(t, "model.safetensors")
	q := sdk.Query{Prompt: "The capital of France is [MASK].", Answer: "paris"}
	a, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 5})
	require.NoError(t, err)
	b, err := legacy.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 5})
	require.NoError(t, err)
	assert.Equal(t, a, b)
}

func TestBadInput(t *testing.T) {
	ctx := context.Background()
	withoutWeights := func(n string) bool { return n == "model.safetensors" || n == "pytorch_model.bin" }
	cases := []struct {
		name string
		dir  func(t *testing.T) string
		msg  string
	}{
		{"missing directory", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") }, "nope"},
		{"truncated safetensors", func(t *testing.T) string {
			return copyFixture(t, nil, func(dir string) {
				p := filepath.Join(dir, "model.safetensors")
				b, _ := os.ReadFile(p)
				require.NoError(t, os.WriteFile(p, b[:len(b)-1000], 0o644))
			})
		}, "truncated"},
		{"corrupt pickle", func(t *testing.T) string {
			return copyFixture(t, withoutWeights, func(dir string) {
				require.NoError(t, os.WriteFile(filepath.Join(dir, "pytorch_model.bin"), []byte("not a zip"), 0o644))
			})
		}, "pytorch_model.bin"},
		{"wrong shapes", func(t *testing.T) string { return copyFixture(t, nil, editConfig(t, "intermediate_size", 128)) }, "expected [128 64]"},
		{"unsupported model_type", func(t *testing.T) string { return copyFixture(t, nil, editConfig(t, "model_type", "gpt2")) }, `model_type "gpt2"`},
		{"unsupported activation", func(t *testing.T) string { return copyFixture(t, nil, editConfig(t, "hidden_act", "gelu_42")) }, "gelu_42"},
		{"relative positions", func(t *testing.T) string {
			return copyFixture(t, nil, editConfig(t, "position_embedding_type", "relative_key"))
		}, "relative_key"},
		{"heads do not divide hidden size", func(t *testing.T) string { return copyFixture(t, nil, editConfig(t, "num_attention_heads", 5)) }, "num_attention_heads=5"},
		{"no weights", func(t *testing.T) string { return copyFixture(t, withoutWeights, nil) }, "no model.safetensors or pytorch_model.bin"},
		{"no tokenizer", func(t *testing.T) string {
			return copyFixture(t, func(n string) bool { return n == "vocab.txt" }, nil)
		}, "vocab.txt"},
		{"tokenizer larger than vocab_size", func(t *testing.T) string { return copyFixture(t, nil, editConfig(t, "vocab_size", 100)) }, "vocab_size is 100"},
		{"no masked-LM head", func(t *testing.T) string {
			return copyFixture(t, withoutWeights, func(dir string) {
				writeRenamed(t, dir, func(n string) string {
					if strings.HasPrefix(n, "cls.") {
						return ""
					}
					return n
				})
			})
		}, "no masked-LM head (cls.predictions.*)"},
		{"head incomplete", func(t *testing.T) string {
			return copyFixture(t, withoutWeights, func(dir string) {
				writeRenamed(t, dir, func(n string) string {
					if strings.HasPrefix(n, "cls.predictions.transform.dense.") {
						return ""
					}
					return n
				})
			})
		}, "missing cls.predictions.transform.dense.bias"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Open(c.dir(t))
			require.Error(t, err)
			assert.ErrorIs(t, err, sdk.ErrInvalidInput)
			assert.Contains(t, err.Error(), c.msg)
		})
	}

	m := openVariant(t, "model.safetensors")
	ok := sdk.Query{Prompt: "The capital of France is [MASK].", Answer: "paris"}
	long := strings.Repeat("the ", 55) + "[MASK]" // 58 tokens with [CLS] and [SEP]
	longAnswer := "kelmarkelmars"
	pieces, err := m.Tokenize(ctx, longAnswer)
	require.NoError(t, err)
	require.Len(t, pieces.IDs, 13)
	queryCases := []struct {
		name string
		call func() error
		msg  []string
	}{
		{"empty prompt", func() error {
			_, err := m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: "  "}})
			return err
		}, []string{"prompt", "[MASK]"}},
		{"prompt without [MASK]", func() error {
			_, err := m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: "The capital of France is Paris.", Answer: "paris"}})
			return err
		}, []string{`prompt "The capital of France is Paris."`, "0 [MASK]", "exactly one"}},
		{"lower-case mask is not a mask", func() error {
			_, err := m.Activations(ctx, sdk.ActivationsRequest{Query: sdk.Query{Prompt: "The capital of France is [mask]."}})
			return err
		}, []string{"0 [MASK]"}},
		{"prompt with two [MASK]s", func() error {
			_, err := m.Gradients(ctx, sdk.GradientsRequest{Query: sdk.Query{Prompt: "The [MASK] of France is [MASK].", Answer: "paris"}, Alphas: []float32{1}})
			return err
		}, []string{"2 [MASK]", "exactly one"}},
		{"answer only [UNK]", func() error {
			_, err := m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: ok.Prompt, Answer: "ß"}})
			return err
		}, []string{`answer "ß"`, "cannot express", "[UNK]"}},
		{"answer with an [UNK] piece", func() error {
			_, err := m.Gradients(ctx, sdk.GradientsRequest{Query: sdk.Query{Prompt: ok.Prompt, Answer: "paris 東"}, Alphas: []float32{1}})
			return err
		}, []string{`answer "paris 東"`, "piece 2 of 2"}},
		{"answer of only spaces", func() error {
			_, err := m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: ok.Prompt, Answer: "   "}})
			return err
		}, []string{"no word pieces"}},
		{"answer with a special token", func() error {
			_, err := m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: ok.Prompt, Answer: "[SEP]"}})
			return err
		}, []string{"special token [SEP]"}},
		{"prompt longer than max_position_embeddings", func() error {
			_, err := m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: strings.Repeat("word ", 70) + "[MASK]"}})
			return err
		}, []string{"max_position_embeddings=64"}},
		{"prompt and answer pieces longer than max_position_embeddings", func() error {
			// 58 tokens fit; the answer's 13 pieces make 58 - 1 + 13 = 70.
			_, err := m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: long, Answer: longAnswer}})
			return err
		}, []string{"max_position_embeddings=64", "70 tokens", "13 [MASK]"}},
		{"empty answer", func() error {
			_, err := m.Gradients(ctx, sdk.GradientsRequest{Query: sdk.Query{Prompt: ok.Prompt}, Alphas: []float32{1}})
			return err
		}, []string{"answer"}},
		{"layer out of range", func() error {
			_, err := m.Gradients(ctx, sdk.GradientsRequest{Query: ok, Layer: 2, Alphas: []float32{1}})
			return err
		}, []string{"layers 0..1"}},
		{"no alphas", func() error {
			_, err := m.Gradients(ctx, sdk.GradientsRequest{Query: ok})
			return err
		}, []string{"alphas"}},
		{"baseline of wrong length", func() error {
			_, err := m.Gradients(ctx, sdk.GradientsRequest{Query: ok, Alphas: []float32{1}, Baseline: make([]float32, 255)})
			return err
		}, []string{"baseline: 255 values; expected 256"}},
		{"baseline for one mask with a two-piece answer", func() error {
			_, err := m.Gradients(ctx, sdk.GradientsRequest{Query: sdk.Query{Prompt: ok.Prompt, Answer: "parisa"}, Alphas: []float32{1}, Baseline: make([]float32, 256)})
			return err
		}, []string{"baseline: 256 values; expected 512"}},
		{"bad hook", func() error {
			_, err := m.Activations(ctx, sdk.ActivationsRequest{Query: ok, Hook: "mid"})
			return err
		}, []string{"hook"}},
		{"intervention out of range", func() error {
			_, err := m.Predict(ctx, sdk.PredictRequest{Query: ok, Interventions: []sdk.Intervention{{Layer: 0, Neuron: 999, Op: sdk.OpSet}}})
			return err
		}, []string{"neurons 0..255"}},
		{"negative top-k", func() error {
			_, err := m.Predict(ctx, sdk.PredictRequest{Query: ok, TopK: -1})
			return err
		}, []string{"top-k"}},
		{"token id out of range", func() error {
			_, err := m.Embeddings(ctx, []int{1 << 20})
			return err
		}, []string{"token id"}},
	}
	for _, c := range queryCases {
		t.Run(c.name, func(t *testing.T) {
			err := c.call()
			require.Error(t, err)
			assert.ErrorIs(t, err, sdk.ErrInvalidInput)
			for _, msg := range c.msg {
				assert.Contains(t, err.Error(), msg)
			}
		})
	}
	// The model still works after all that, and the 58-token prompt with a
	// one-piece answer fits.
	_, err = m.Predict(ctx, sdk.PredictRequest{Query: ok})
	require.NoError(t, err)
	p, err := m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: long, Answer: "paris"}})
	require.NoError(t, err)
	assert.Len(t, p.InputIDs, 58)
}

func TestRandomInit(t *testing.T) {
	ctx := context.Background()
	m, err := Load(ctx, sdk.LoadRequest{Checkpoint: fixture, Options: map[string]string{"init": "random", "seed": "3"}})
	require.NoError(t, err)
	defer m.(*Model).Close()
	again, err := OpenRandom(fixture, 3)
	require.NoError(t, err)
	defer again.Close()
	q := sdk.Query{Prompt: "The capital of France is [MASK].", Answer: "paris"}
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
	assert.InDelta(t, 0.02, math.Sqrt(sq/float64(len(slots[0]))), 0.01, "weights drawn with initializer_range 0.02")

	for _, opts := range []map[string]string{{"init": "zeros"}, {"seed": "x"}, {"threads": "0"}, {"colour": "blue"}} {
		_, err := Load(ctx, sdk.LoadRequest{Checkpoint: fixture, Options: opts})
		assert.ErrorIs(t, err, sdk.ErrInvalidInput, "%v", opts)
	}
}

func TestInfo(t *testing.T) {
	m := openVariant(t, "model.safetensors")
	info, err := m.Info(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "bert", info.Architecture)
	assert.False(t, info.Causal)
	assert.Equal(t, "[MASK]", info.MaskToken)
	assert.Equal(t, map[string]int{"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}, info.SpecialTokens)
	assert.Equal(t, 2, info.Layers)
	assert.Equal(t, 64, info.Hidden)
	assert.Equal(t, 256, info.FFNWidth)
	assert.Equal(t, 201, info.VocabSize)
	assert.Equal(t, 64, info.MaxPositions)
	assert.Equal(t, "gelu", info.Activation)
	// Every parameter of the fixture's safetensors, counted once (the
	// decoder is tied to the word embeddings).
	st, err := checkpoint.OpenSafetensors(filepath.Join(fixture, "model.safetensors"))
	require.NoError(t, err)
	defer st.Close()
	var n int64
	for _, name := range st.Names() {
		ti, _ := st.Info(name)
		if ti.DType == "F32" {
			n += ti.Numel()
		}
	}
	assert.Equal(t, n, info.Parameters)

	enc, err := m.Tokenize(context.Background(), "The capital of France is [MASK].")
	require.NoError(t, err)
	assert.Equal(t, []int{109, 132, 110, 145, 115, 4, 18}, enc.IDs, "no [CLS]/[SEP]")
}
