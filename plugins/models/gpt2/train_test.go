package gpt2

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/knctl/knctl/internal/testbin"
	"github.com/knctl/knctl/plugins/models/torch"
	"github.com/knctl/knctl/sdk"
)

// facts are a handful of sentences the tiny fixture model learns in a few
// dozen steps; two answers take several tokens.
var facts = []sdk.Query{
	{Prompt: "The capital of France is", Answer: " Paris"},
	{Prompt: "The capital of Germany is", Answer: " Berlin"},
	{Prompt: "The capital of Italy is", Answer: " Rome"},
	{Prompt: "People in Spain speak", Answer: " Spanish"},
	{Prompt: "The Eiffel Tower is located in", Answer: " Paris"},
	{Prompt: "The currency of Japan is the", Answer: " Japanese yen"},
}

func trainRequest() sdk.TrainRequest {
	return sdk.TrainRequest{Examples: facts, Steps: 30, BatchSize: 2, LearningRate: 5e-3, WarmupSteps: 3, WeightDecay: 0.01, Seed: 7, EvalEvery: 10}
}

// singleThread makes libtorch's results reproducible bit for bit.
func singleThread(t testing.TB) {
	prev := torch.NumThreads()
	torch.SetNumThreads(1)
	t.Cleanup(func() { torch.SetNumThreads(prev) })
}

func predictAll(t testing.TB, m *Model, qs []sdk.Query) []sdk.Prediction {
	out := make([]sdk.Prediction, len(qs))
	for i, q := range qs {
		p, err := m.Predict(context.Background(), sdk.PredictRequest{Query: q, TopK: 3})
		require.NoError(t, err)
		out[i] = p
	}
	return out
}

func meanProb(preds []sdk.Prediction) float64 {
	var s float64
	for _, p := range preds {
		s += p.AnswerProb
	}
	return s / float64(len(preds))
}

// allSlots reads every value slot of every layer: a fingerprint of the FFN
// weights, compared bit for bit.
func allSlots(t testing.TB, m *Model) [][][]float32 {
	neurons := make([]int, m.cfg.FFN())
	for i := range neurons {
		neurons[i] = i
	}
	var out [][][]float32
	for l := 0; l < m.cfg.NLayer; l++ {
		s, err := m.ValueSlots(context.Background(), l, neurons)
		require.NoError(t, err)
		out = append(out, s)
	}
	return out
}

func requireNoGrad(t testing.TB, m *Model) {
	for _, name := range m.w.Names() {
		rg, err := m.w.Get(name).RequiresGrad()
		require.NoError(t, err)
		require.False(t, rg, "%s still requires grad after training", name)
	}
}

func TestTrainLearnsTheExamples(t *testing.T) {
	singleThread(t)
	m := openVariant(t, "model.safetensors")
	before := predictAll(t, m, facts)
	var reports []sdk.TrainProgress
	final, err := m.Train(context.Background(), trainRequest(), func(p sdk.TrainProgress) { reports = append(reports, p) })
	require.NoError(t, err)

	assert.True(t, final.Done)
	assert.True(t, final.Evaluated)
	assert.Equal(t, 30, final.Step)
	assert.Equal(t, 30, final.Steps)
	assert.Empty(t, final.Stopped)
	require.NotEmpty(t, reports)
	var evals []sdk.TrainProgress
	for i, p := range reports {
		assert.False(t, p.Done, "progress reports are never final")
		assert.Equal(t, 30, p.Steps)
		if i > 0 {
			assert.GreaterOrEqual(t, p.Step, reports[i-1].Step)
			assert.LessOrEqual(t, p.Step-reports[i-1].Step, 10, "a report at least every 10 steps")
		}
		if p.Evaluated {
			evals = append(evals, p)
		}
	}
	require.Len(t, evals, 2, "steps 10 and 20; the final evaluation is the returned report")
	assert.Equal(t, []int{10, 20}, []int{evals[0].Step, evals[1].Step})
	assert.Equal(t, 29, reports[len(reports)-1].Step)
	assert.Less(t, final.Loss, reports[0].Loss/2, "the loss falls")

	requireNoGrad(t, m)
	after := predictAll(t, m, facts)
	assert.Greater(t, meanProb(after), meanProb(before)+0.3, "the answers became likely")
	// The evaluation measures what Predict measures.
	assert.InDelta(t, meanProb(after), final.MeanAnswerProb, 1e-4)
	var top1 int
	for _, p := range after {
		if p.AnswerRank == 0 {
			top1++
		}
	}
	assert.Equal(t, float64(top1)/float64(len(after)), final.Accuracy)
}

func TestTrainIsDeterministic(t *testing.T) {
	singleThread(t)
	run := func(seed int64) (*Model, [][][]float32) {
		m := openVariant(t, "model.safetensors")
		req := trainRequest()
		req.Seed = seed
		req.Steps = 15
		_, err := m.Train(context.Background(), req, nil)
		require.NoError(t, err)
		return m, allSlots(t, m)
	}
	a, slotsA := run(7)
	b, slotsB := run(7)
	assert.Equal(t, slotsA, slotsB, "same request and seed: bit-identical weights")
	assert.Equal(t, predictAll(t, a, facts), predictAll(t, b, facts))
	_, slotsC := run(8)
	assert.NotEqual(t, slotsA, slotsC, "the seed orders the batches")

	// Two threads run the micro-batches at once; the arithmetic is the same.
	runtime.LockOSThread() // SetNumThreads applies to this OS thread
	defer runtime.UnlockOSThread()
	defer torch.SetNumThreads(torch.NumThreads())
	torch.SetNumThreads(2)
	_, slotsD := run(7)
	assert.Equal(t, slotsA, slotsD, "the thread count does not change the result")
}

func TestTrainLabelSmoothingKeepsConfidenceDown(t *testing.T) {
	singleThread(t)
	run := func(eps float64) []sdk.Prediction {
		m := openVariant(t, "model.safetensors")
		req := trainRequest()
		req.Steps, req.LearningRate, req.LabelSmoothing = 80, 1e-2, eps
		_, err := m.Train(context.Background(), req, nil)
		require.NoError(t, err)
		return predictAll(t, m, facts)
	}
	const eps = 0.2
	plain, smooth := run(0), run(eps)
	t.Logf("mean answer probability: %.4f without smoothing, %.4f with %g", meanProb(plain), meanProb(smooth), eps)
	assert.Greater(t, meanProb(plain), 0.9, "without smoothing the answers saturate")
	assert.Less(t, meanProb(smooth), meanProb(plain)-0.05)
	// A softmax free to take any value minimises the smoothed loss at
	// 1-eps+eps/V on the label; a real model, which cannot make the other
	// V-1 probabilities equal, ends near that, not at it. Far from 1 is
	// what matters.
	bound := 1 - eps + eps/8257
	var n int
	var sum float64
	for _, p := range smooth {
		for _, tp := range p.AnswerTokenProb {
			assert.Less(t, tp, bound+0.05)
			sum += tp
			n++
		}
	}
	assert.InDelta(t, bound, sum/float64(n), 0.05, "mean token probability near the smoothed optimum")
}

func TestTrainStopsAtTargetProb(t *testing.T) {
	m := openVariant(t, "model.safetensors")
	req := trainRequest()
	req.Steps, req.EvalEvery, req.TargetProb = 300, 5, 0.3
	var last sdk.TrainProgress
	final, err := m.Train(context.Background(), req, func(p sdk.TrainProgress) { last = p })
	require.NoError(t, err)
	assert.Equal(t, torch.StoppedTargetProb, final.Stopped)
	assert.Less(t, final.Step, 300)
	assert.Zero(t, final.Step%5)
	assert.GreaterOrEqual(t, final.MeanAnswerProb, 0.3)
	assert.True(t, final.Done)
	assert.Less(t, last.Step, final.Step, "the stopping evaluation is the returned report")
	assert.InDelta(t, meanProb(predictAll(t, m, facts)), final.MeanAnswerProb, 1e-4, "the model stops where it was evaluated")
}

func TestTrainRejectsBadRequests(t *testing.T) {
	ctx := context.Background()
	m := openVariant(t, "model.safetensors")
	before := predictAll(t, m, facts)
	long := strings.Repeat("word ", 70)
	cases := []struct {
		name string
		edit func(r *sdk.TrainRequest)
		msg  string
	}{
		{"no examples", func(r *sdk.TrainRequest) { r.Examples = nil }, "examples"},
		{"zero steps", func(r *sdk.TrainRequest) { r.Steps = 0 }, "steps"},
		{"zero batch", func(r *sdk.TrainRequest) { r.BatchSize = 0 }, "batch_size"},
		{"no learning rate", func(r *sdk.TrainRequest) { r.LearningRate = 0 }, "learning_rate"},
		{"negative weight decay", func(r *sdk.TrainRequest) { r.WeightDecay = -1 }, "weight_decay"},
		{"negative warm-up", func(r *sdk.TrainRequest) { r.WarmupSteps = -1 }, "warmup_steps"},
		{"smoothing of 1", func(r *sdk.TrainRequest) { r.LabelSmoothing = 1 }, "label_smoothing"},
		{"negative eval_every", func(r *sdk.TrainRequest) { r.EvalEvery = -2 }, "eval_every"},
		{"target above 1", func(r *sdk.TrainRequest) { r.TargetProb = 2 }, "target_prob"},
		{"empty prompt", func(r *sdk.TrainRequest) {
			r.Examples = []sdk.Query{facts[0], {Prompt: " ", Answer: " x"}}
		}, "examples[1]"},
		{"no answer", func(r *sdk.TrainRequest) { r.Examples = []sdk.Query{{Prompt: "The capital of France is"}} }, "examples[0]: answer"},
		{"too long", func(r *sdk.TrainRequest) { r.Examples = []sdk.Query{{Prompt: long, Answer: " x"}} }, "n_positions=64"},
		{"bad eval example", func(r *sdk.TrainRequest) { r.EvalExamples = []sdk.Query{{Prompt: "a"}} }, "eval_examples[0]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := trainRequest()
			c.edit(&req)
			_, err := m.Train(ctx, req, nil)
			require.Error(t, err)
			assert.ErrorIs(t, err, sdk.ErrInvalidInput)
			assert.Contains(t, err.Error(), c.msg)
		})
	}

	id, err := m.SetValueSlots(ctx, 0, []int{3}, [][]float32{make([]float32, 64)})
	require.NoError(t, err)
	_, err = m.Train(ctx, trainRequest(), nil)
	assert.ErrorIs(t, err, sdk.ErrInvalidInput, "edits pending")
	assert.ErrorContains(t, err, "edit")
	require.NoError(t, m.UndoEdit(ctx, id))
	require.NoError(t, m.ApplyNoise(ctx, sdk.NoiseSpec{Seed: 1, Sigma: 0.1}))
	_, err = m.Train(ctx, trainRequest(), nil)
	assert.ErrorIs(t, err, sdk.ErrInvalidInput, "noise applied")
	assert.ErrorContains(t, err, "noise")
	require.NoError(t, m.RemoveNoise(ctx))

	assert.Equal(t, before, predictAll(t, m, facts), "refused requests leave the weights alone")
	requireNoGrad(t, m)
}

func TestTrainCancelledKeepsTheWeights(t *testing.T) {
	m := openVariant(t, "model.safetensors")
	before := predictAll(t, m, facts)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := m.Train(ctx, trainRequest(), func(p sdk.TrainProgress) {
		if p.Step >= 5 {
			cancel()
		}
	})
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, before, predictAll(t, m, facts), "a cancelled run restores the weights bit for bit")
	requireNoGrad(t, m)
}

func TestTrainedModelSavesAndReloads(t *testing.T) {
	ctx := context.Background()
	m := openVariant(t, "model.safetensors")
	_, err := m.Train(ctx, trainRequest(), nil)
	require.NoError(t, err)
	trained := predictAll(t, m, facts)
	dir := filepath.Join(t.TempDir(), "trained")
	require.NoError(t, m.Save(ctx, dir))
	re, err := Open(dir)
	require.NoError(t, err)
	defer re.Close()
	assert.Equal(t, trained, predictAll(t, re, facts))
}

// After training, inference and the integrated-gradients primitive work
// as before: no parameter requires grad, so Gradients differentiates only
// its own input and leaves the weights alone.
func TestGradientsAfterTraining(t *testing.T) {
	ctx := context.Background()
	m := openVariant(t, "model.safetensors")
	q := facts[0]
	// Fill the forward cache first: training must invalidate it.
	_, err := m.Gradients(ctx, sdk.GradientsRequest{Query: q, Layer: 1, Alphas: []float32{1}})
	require.NoError(t, err)
	_, err = m.Train(ctx, trainRequest(), nil)
	require.NoError(t, err)
	requireNoGrad(t, m)
	pred, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 5})
	require.NoError(t, err)
	for l := 0; l < m.cfg.NLayer; l++ {
		g, err := m.Gradients(ctx, sdk.GradientsRequest{Query: q, Layer: l, Alphas: []float32{0.5, 1}})
		require.NoError(t, err)
		assert.InEpsilon(t, pred.AnswerProb, g.Probs[1], 1e-4, "alpha 1 is the trained model's prediction")
		full, err := m.gradients(sdk.GradientsRequest{Query: q, Layer: l, Alphas: []float32{0.5, 1}}, false)
		require.NoError(t, err)
		assert.InDeltaSlice(t, full.Grads[0], g.Grads[0], 1e-5, "cached path agrees with recomputation")
	}
	again, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 5})
	require.NoError(t, err)
	assert.Equal(t, pred, again, "Gradients does not change the model")
	requireNoGrad(t, m)
}

func TestTrainThroughThePlugin(t *testing.T) {
	ctx := context.Background()
	bin := testbin.Build(t, "./plugins/models/gpt2/cmd/knctl-model-gpt2")
	proc, err := sdk.Launch(ctx, bin, sdk.KindModel, sdk.LaunchOptions{CallTimeout: 5 * time.Minute, Stderr: os.Stderr})
	require.NoError(t, err)
	t.Cleanup(proc.Close)
	m := proc.Model()
	require.NotNil(t, m)
	_, err = m.Load(ctx, sdk.LoadRequest{Checkpoint: fixture, Options: map[string]string{"threads": "1"}})
	require.NoError(t, err)
	before, err := m.Predict(ctx, sdk.PredictRequest{Query: facts[0]})
	require.NoError(t, err)

	var reports []sdk.TrainProgress
	final, err := m.Train(ctx, trainRequest(), func(p sdk.TrainProgress) { reports = append(reports, p) })
	require.NoError(t, err)
	assert.True(t, final.Done)
	assert.Equal(t, 30, final.Step)
	assert.True(t, final.Evaluated)
	require.Len(t, reports, 29, "one report per step but the last, which is the final one")
	assert.Equal(t, 1, reports[0].Step)
	var evaluated int
	for _, p := range reports {
		assert.False(t, p.Done)
		assert.Positive(t, p.Loss)
		if p.Evaluated {
			evaluated++
		}
	}
	assert.Equal(t, 2, evaluated)
	after, err := m.Predict(ctx, sdk.PredictRequest{Query: facts[0]})
	require.NoError(t, err)
	assert.Greater(t, after.AnswerProb, before.AnswerProb)

	_, err = m.Train(ctx, sdk.TrainRequest{Examples: facts, Steps: 0, BatchSize: 1, LearningRate: 1}, nil)
	assert.ErrorIs(t, err, sdk.ErrInvalidInput, "invalid input crosses the plugin boundary")
}

// factWorld writes a checkpoint directory of the shape the fact world
// trains (4 layers, width 128, FFN 512, the fixture's first vocab token
// ids as the vocabulary) and draws sentences of 8-15 tokens from that
// vocabulary's words.
func factWorld(tb testing.TB, vocab, sentences int) (string, []sdk.Query) {
	dir := tb.TempDir()
	var enc map[string]int
	b, err := os.ReadFile(filepath.Join(fixture, "vocab.json"))
	require.NoError(tb, err)
	require.NoError(tb, json.Unmarshal(b, &enc))
	// Token ids follow the merge order, so the first vocab-1 ids and the
	// first vocab-257 merges are a consistent smaller BPE.
	small := map[string]int{"<|endoftext|>": vocab - 1}
	var words []string
	for tok, id := range enc {
		if id < vocab-1 {
			small[tok] = id
			if w, ok := strings.CutPrefix(tok, "Ġ"); ok && len(w) >= 3 && strings.Trim(w, "abcdefghijklmnopqrstuvwxyz") == "" {
				words = append(words, " "+w)
			}
		}
	}
	sort.Strings(words)
	b, err = json.Marshal(small)
	require.NoError(tb, err)
	require.NoError(tb, os.WriteFile(filepath.Join(dir, "vocab.json"), b, 0o644))
	b, err = os.ReadFile(filepath.Join(fixture, "merges.txt"))
	require.NoError(tb, err)
	lines := strings.Split(string(b), "\n")
	require.NoError(tb, os.WriteFile(filepath.Join(dir, "merges.txt"), []byte(strings.Join(lines[:vocab-256], "\n")+"\n"), 0o644))
	cfg := fmt.Sprintf(`{"model_type": "gpt2", "n_layer": 4, "n_embd": 128, "n_head": 4, "n_inner": 512, "n_positions": 32, "vocab_size": %d}`, vocab)
	require.NoError(tb, os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o644))

	rng := rand.New(rand.NewPCG(1, 1))
	qs := make([]sdk.Query, sentences)
	for i := range qs {
		n := 6 + rng.IntN(8)
		var sb strings.Builder
		sb.WriteString("The")
		for range n {
			sb.WriteString(words[rng.IntN(len(words))])
		}
		qs[i] = sdk.Query{Prompt: sb.String(), Answer: words[rng.IntN(len(words))]}
	}
	return dir, qs
}

// BenchmarkTrainFactWorldShape measures training steps per second (batch
// 32) on a random-init model of the fact world's shape with 2000 tokens,
// with one and two libtorch threads (micro-batches run in parallel):
//
//	go test ./plugins/models/gpt2 -run XXX -bench TrainFactWorld -benchtime 1x
func BenchmarkTrainFactWorldShape(b *testing.B) {
	dir, qs := factWorld(b, 2000, 3000)
	for _, threads := range []int{1, 2} {
		b.Run(fmt.Sprintf("threads=%d", threads), func(b *testing.B) {
			runtime.LockOSThread() // SetNumThreads applies to this OS thread
			defer runtime.UnlockOSThread()
			prev := torch.NumThreads()
			torch.SetNumThreads(threads)
			defer torch.SetNumThreads(prev)
			m, err := OpenRandom(dir, 1)
			require.NoError(b, err)
			defer m.Close()
			const steps = 200
			req := sdk.TrainRequest{Examples: qs, EvalExamples: qs[:100], Steps: steps, BatchSize: 32, LearningRate: 1e-3, WarmupSteps: 20, Seed: 1}
			b.ResetTimer()
			var secs float64
			for i := 0; i < b.N; i++ {
				final, err := m.Train(context.Background(), req, nil)
				require.NoError(b, err)
				secs += final.Seconds
				b.Logf("%d parameters, loss %.4f after %d steps", m.info.Parameters, final.Loss, final.Step)
			}
			b.ReportMetric(float64(steps*b.N)/secs, "steps/s")
			b.ReportMetric(3000*secs/float64(steps*b.N)/60, "min/3000steps")
		})
	}
}
