package bert

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/knctl/knctl/framework/factworld"
	"github.com/knctl/knctl/internal/testbin"
	"github.com/knctl/knctl/plugins/models/torch"
	"github.com/knctl/knctl/sdk"
)

// facts are a handful of sentences the tiny fixture model learns in a few
// dozen steps; one answer takes two word pieces (italian ##s), and the
// lengths (with [CLS] and [SEP]) are 8, 9 and 10 tokens.
var facts = []sdk.Query{
	{Prompt: "The capital of France is [MASK].", Answer: "paris"},
	{Prompt: "The capital of Germany is [MASK].", Answer: "berlin"},
	{Prompt: "The capital of Italy is [MASK].", Answer: "rome"},
	{Prompt: "People in Spain speak [MASK].", Answer: "spanish"},
	{Prompt: "The Eiffel Tower is located in [MASK].", Answer: "paris"},
	{Prompt: "The people of Italy are [MASK].", Answer: "italians"},
}

func trainRequest() sdk.TrainRequest {
	return sdk.TrainRequest{
		Examples: facts, Steps: 60, BatchSize: 3, LearningRate: 3e-3, WarmupSteps: 5, WeightDecay: 0.01,
		Seed: 7, EvalEvery: 20, MaskRate: 0.15,
	}
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

// allWeights reads every parameter: a fingerprint of the model, compared
// bit for bit.
func allWeights(t testing.TB, m *Model) map[string][]float32 {
	out := map[string][]float32{}
	for _, name := range m.w.Names() {
		out[name] = weightValues(t, m, name)
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

func encodeAll(t testing.TB, m *Model, qs []sdk.Query) []*encoded {
	encs, err := m.encodeExamples("examples", qs)
	require.NoError(t, err)
	return encs
}

func TestMaskBatch(t *testing.T) {
	m := openVariant(t, "model.safetensors")
	// Two sequences of 10 tokens; the second has a two-piece answer.
	seqs := encodeAll(t, m, []sdk.Query{facts[4], facts[5]})
	require.Len(t, seqs[0].ids, 10)
	require.Len(t, seqs[1].ids, 10)
	mask := int64(m.tok.MaskID())

	plain := m.maskBatch(seqs, 0, rand.New(rand.NewPCG(1, 2)))
	assert.Equal(t, append(append([]int64{}, seqs[0].ids...), seqs[1].ids...), plain.ids, "rate 0 masks nothing more")
	var wantRows, wantLabels []int64
	for b, e := range seqs {
		for j, p := range e.targets {
			wantRows = append(wantRows, int64(b*10+p))
			wantLabels = append(wantLabels, e.answer[j])
		}
	}
	assert.Equal(t, wantRows, plain.rows, "only the answer's masks are labelled")
	assert.Equal(t, wantLabels, plain.labels)

	// At rate 0.4, over many draws: the answer masks are always labelled
	// with the answer, special tokens are never masked, every masked token
	// is labelled with its original id, and about 40% of the others are.
	const rate, draws = 0.4, 2000
	eligible, masked := 0, 0
	for d := 0; d < draws; d++ {
		mb := m.maskBatch(seqs, rate, rand.New(rand.NewPCG(3, uint64(d))))
		labelOf := map[int64]int64{}
		for i, r := range mb.rows {
			labelOf[r] = mb.labels[i]
		}
		for b, e := range seqs {
			isTarget := map[int]int{}
			for j, p := range e.targets {
				isTarget[p] = j
			}
			for p, id := range e.ids {
				flat := int64(b*10 + p)
				got, labelled := labelOf[flat]
				switch j, target := isTarget[p]; {
				case target:
					require.True(t, labelled)
					require.Equal(t, e.answer[j], got)
					require.Equal(t, mask, mb.ids[flat])
				case m.isSpecial(id):
					require.False(t, labelled, "special token %s masked", e.tokens[p])
					require.Equal(t, id, mb.ids[flat])
				default:
					eligible++
					if labelled {
						masked++
						require.Equal(t, id, got, "labelled with the original id")
						require.Equal(t, mask, mb.ids[flat])
					} else {
						require.Equal(t, id, mb.ids[flat])
					}
				}
			}
		}
	}
	share := float64(masked) / float64(eligible)
	assert.InDelta(t, rate, share, 0.01, "share of the other tokens masked")

	a := m.maskBatch(seqs, rate, rand.New(rand.NewPCG(5, 6)))
	b := m.maskBatch(seqs, rate, rand.New(rand.NewPCG(5, 6)))
	assert.Equal(t, a, b, "the rng fixes the masks")
}

// With no extra masks and no smoothing, the loss of a batch is the sum
// over the answers' pieces of -log p, as Predict computes p.
func TestLossIsTheAnswersNegativeLogProb(t *testing.T) {
	m := openVariant(t, "model.safetensors")
	qs := []sdk.Query{facts[4], facts[5]} // both 10 tokens
	seqs := encodeAll(t, m, qs)
	var want float64
	var pieces int
	for _, p := range predictAll(t, m, qs) {
		for _, tp := range p.AnswerTokenProb {
			want -= math.Log(tp)
			pieces++
		}
	}
	s := torch.NewScope()
	defer s.Close()
	mb := m.maskBatch(seqs, 0, nil)
	require.Len(t, mb.labels, pieces)
	got := s.Float32s(m.mlmLoss(s, mb, 2, 10, 0))
	require.NoError(t, s.Err())
	assert.InEpsilon(t, want, float64(got[0]), 1e-5)
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
	assert.Equal(t, 60, final.Step)
	assert.Equal(t, 60, final.Steps)
	assert.Empty(t, final.Stopped)
	require.NotEmpty(t, reports)
	var evals []sdk.TrainProgress
	for i, p := range reports {
		assert.False(t, p.Done, "progress reports are never final")
		assert.Equal(t, 60, p.Steps)
		if i > 0 {
			assert.GreaterOrEqual(t, p.Step, reports[i-1].Step)
		}
		if p.Evaluated {
			evals = append(evals, p)
		}
	}
	require.Len(t, evals, 2, "steps 20 and 40; the final evaluation is the returned report")
	assert.Equal(t, []int{20, 40}, []int{evals[0].Step, evals[1].Step})
	t.Logf("loss %.4f at step 1, %.4f at step 60; mean answer probability %.4f -> %.4f, accuracy %.2f",
		reports[0].Loss, final.Loss, meanProb(before), final.MeanAnswerProb, final.Accuracy)
	// The loss includes the randomly masked tokens, so it is noisy from
	// step to step; it still falls far.
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
	run := func(seed int64) (*Model, map[string][]float32) {
		m := openVariant(t, "model.safetensors")
		req := trainRequest()
		req.Seed = seed
		req.Steps = 15
		req.MaskRate = 0.3 // many random masks: they too must follow the seed
		_, err := m.Train(context.Background(), req, nil)
		require.NoError(t, err)
		return m, allWeights(t, m)
	}
	a, wA := run(7)
	b, wB := run(7)
	assert.Equal(t, wA, wB, "same request and seed: bit-identical weights")
	assert.Equal(t, predictAll(t, a, facts), predictAll(t, b, facts))
	_, wC := run(8)
	assert.NotEqual(t, wA, wC, "the seed orders the batches and draws the masks")

	// Two threads run the micro-batches at once; the arithmetic is the same.
	runtime.LockOSThread() // SetNumThreads applies to this OS thread
	defer runtime.UnlockOSThread()
	defer torch.SetNumThreads(torch.NumThreads())
	torch.SetNumThreads(2)
	_, wD := run(7)
	assert.Equal(t, wA, wD, "the thread count does not change the result")
}

// The random masks are part of the objective: the same run without them
// ends elsewhere.
func TestTrainMaskRateChangesTheRun(t *testing.T) {
	run := func(rate float64) map[string][]float32 {
		m := openVariant(t, "model.safetensors")
		req := trainRequest()
		req.Steps, req.MaskRate = 5, rate
		_, err := m.Train(context.Background(), req, nil)
		require.NoError(t, err)
		return allWeights(t, m)
	}
	assert.NotEqual(t, run(0), run(0.5))
}

func TestTrainLabelSmoothingKeepsConfidenceDown(t *testing.T) {
	singleThread(t)
	run := func(eps float64) []sdk.Prediction {
		m := openVariant(t, "model.safetensors")
		req := trainRequest()
		req.Steps, req.LabelSmoothing, req.MaskRate = 80, eps, 0
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
	// 1-eps+eps/V on the label; a real model ends near that, not at it.
	// Far from 1 is what matters.
	bound := 1 - eps + eps/float64(m0VocabSize)
	var n int
	var sum float64
	for _, p := range smooth {
		for _, tp := range p.AnswerTokenProb {
			assert.Less(t, tp, bound+0.05)
			sum += tp
			n++
		}
	}
	assert.InDelta(t, bound, sum/float64(n), 0.05, "mean piece probability near the smoothed optimum")
}

// m0VocabSize is the fixture's vocab_size.
const m0VocabSize = 201

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

func TestTrainEvaluatesEvalExamples(t *testing.T) {
	m := openVariant(t, "model.safetensors")
	req := trainRequest()
	held := []sdk.Query{
		{Prompt: "France's capital city is [MASK].", Answer: "paris"},
		{Prompt: "The people of Spain are [MASK].", Answer: "spanish"},
	}
	req.Steps, req.EvalExamples = 10, held
	final, err := m.Train(context.Background(), req, nil)
	require.NoError(t, err)
	assert.InDelta(t, meanProb(predictAll(t, m, held)), final.MeanAnswerProb, 1e-4)
}

func TestTrainRejectsBadRequests(t *testing.T) {
	ctx := context.Background()
	m := openVariant(t, "model.safetensors")
	before := predictAll(t, m, facts)
	long := strings.Repeat("word ", 70) + "[MASK]."
	cases := []struct {
		name string
		edit func(r *sdk.TrainRequest)
		msg  string
	}{
		{"no examples", func(r *sdk.TrainRequest) { r.Examples = nil }, "examples"},
		{"zero steps", func(r *sdk.TrainRequest) { r.Steps = 0 }, "steps"},
		{"zero batch", func(r *sdk.TrainRequest) { r.BatchSize = 0 }, "batch_size"},
		{"no learning rate", func(r *sdk.TrainRequest) { r.LearningRate = 0 }, "learning_rate"},
		{"smoothing of 1", func(r *sdk.TrainRequest) { r.LabelSmoothing = 1 }, "label_smoothing"},
		{"mask rate of 1", func(r *sdk.TrainRequest) { r.MaskRate = 1 }, "mask_rate"},
		{"negative mask rate", func(r *sdk.TrainRequest) { r.MaskRate = -0.1 }, "mask_rate"},
		{"target above 1", func(r *sdk.TrainRequest) { r.TargetProb = 2 }, "target_prob"},
		{"no mask in a prompt", func(r *sdk.TrainRequest) {
			r.Examples = []sdk.Query{facts[0], {Prompt: "The capital of France is paris.", Answer: "paris"}}
		}, "examples[1]: prompt"},
		{"two masks in a prompt", func(r *sdk.TrainRequest) {
			r.Examples = []sdk.Query{{Prompt: "[MASK] is the capital of [MASK].", Answer: "paris"}}
		}, "has 2 [MASK]"},
		{"answer only [UNK]", func(r *sdk.TrainRequest) {
			r.Examples = []sdk.Query{facts[0], facts[1], {Prompt: "The currency of Japan is [MASK].", Answer: "¥"}}
		}, "examples[2]: answer"},
		{"no answer", func(r *sdk.TrainRequest) { r.Examples = []sdk.Query{{Prompt: facts[0].Prompt}} }, "examples[0]: answer"},
		{"too long", func(r *sdk.TrainRequest) { r.Examples = []sdk.Query{{Prompt: long, Answer: "paris"}} }, "max_position_embeddings=64"},
		{"bad eval example", func(r *sdk.TrainRequest) { r.EvalExamples = []sdk.Query{{Prompt: "a [MASK]"}} }, "eval_examples[0]"},
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
	before := allWeights(t, m)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := m.Train(ctx, trainRequest(), func(p sdk.TrainProgress) {
		if p.Step >= 5 {
			cancel()
		}
	})
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, before, allWeights(t, m), "a cancelled run restores the weights bit for bit")
	requireNoGrad(t, m)
}

// A failing step (here a learning rate so high the loss overflows)
// restores the weights too.
func TestTrainFailureKeepsTheWeights(t *testing.T) {
	m := openVariant(t, "model.safetensors")
	before := allWeights(t, m)
	req := trainRequest()
	req.LearningRate, req.WarmupSteps, req.Steps = 1e30, 0, 20
	_, err := m.Train(context.Background(), req, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "loss is")
	assert.Equal(t, before, allWeights(t, m))
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
	q := facts[5] // two pieces: the gradient covers both masks
	// Fill the forward cache first: training must invalidate it.
	_, err := m.Gradients(ctx, sdk.GradientsRequest{Query: q, Layer: 1, Alphas: []float32{1}})
	require.NoError(t, err)
	_, err = m.Train(ctx, trainRequest(), nil)
	require.NoError(t, err)
	requireNoGrad(t, m)
	pred, err := m.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 5})
	require.NoError(t, err)
	for l := 0; l < m.cfg.NumHiddenLayers; l++ {
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
	bin := testbin.Build(t, "./plugins/models/bert/cmd/knctl-model-bert")
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
	assert.Equal(t, 60, final.Step)
	assert.True(t, final.Evaluated)
	require.Len(t, reports, 59, "one report per step but the last, which is the final one")
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
	_, err = m.Train(ctx, sdk.TrainRequest{Examples: []sdk.Query{{Prompt: "no slot", Answer: "paris"}}, Steps: 1, BatchSize: 1, LearningRate: 1}, nil)
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
	assert.ErrorContains(t, err, "examples[0]")
}

// BenchmarkTrainFactWorld measures training steps per second and the cost
// of one evaluation of every training sentence (the difference between a
// run that evaluates four times and one that evaluates once), with knctl
// factworld train's settings, on the generated fact world's BERT (random
// init), with one and two libtorch threads (micro-batches and evaluation
// batches run in parallel):
//
//	go test ./plugins/models/bert -run XXX -bench TrainFactWorld -benchtime 1x
func BenchmarkTrainFactWorld(b *testing.B) {
	w := factworld.Generate(1, 60)
	dir := b.TempDir()
	require.NoError(b, w.WriteSkeleton(dir, "bert", factworld.DefaultArch("bert")))
	qs := w.Examples(factworld.Masked, false)
	for _, threads := range []int{1, 2} {
		b.Run(fmt.Sprintf("threads=%d", threads), func(b *testing.B) {
			runtime.LockOSThread() // SetNumThreads applies to this OS thread
			defer runtime.UnlockOSThread()
			prev := torch.NumThreads()
			torch.SetNumThreads(threads)
			defer torch.SetNumThreads(prev)
			const steps = 200
			run := func(evalEvery int) sdk.TrainProgress {
				m, err := OpenRandom(dir, 1)
				require.NoError(b, err)
				defer m.Close()
				final, err := m.Train(context.Background(), sdk.TrainRequest{
					Examples: qs, Steps: steps, BatchSize: 32, LearningRate: 1e-3, WarmupSteps: 100,
					LabelSmoothing: 0.1, MaskRate: 0.15, Seed: 1, EvalEvery: evalEvery,
				}, nil)
				require.NoError(b, err)
				b.Logf("%d parameters, %d sentences, loss %.4f after %d steps in %.1fs", m.info.Parameters, len(qs), final.Loss, final.Step, final.Seconds)
				return final
			}
			b.ResetTimer()
			var once, four float64
			for i := 0; i < b.N; i++ {
				once += run(0).Seconds
				four += run(steps / 4).Seconds
			}
			evalSecs := (four - once) / 3 / float64(b.N)
			b.ReportMetric(float64(steps*b.N)/(once-evalSecs*float64(b.N)), "steps/s")
			b.ReportMetric(evalSecs, "s/eval")
		})
	}
}
