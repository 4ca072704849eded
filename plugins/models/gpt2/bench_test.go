package gpt2

import (
	"context"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/knctl/knctl/internal/testbin"
	"github.com/knctl/knctl/plugins/models/torch"
	"github.com/knctl/knctl/sdk"
	"github.com/knctl/knctl/sdk/conformance"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

func TestConformance(t *testing.T) {
	conformance.ModelPlugin(t, testbin.Build(t, "./plugins/models/gpt2/cmd/knctl-model-gpt2"), fixture, conformance.ModelCase{
		Prompt: "The capital of France is", Answer: " Paris",
	})
}

// gpt2Small is a GPT-2-124M-shaped model (the real GPT-2 config and
// tokenizer) with random weights: benchmarks need no checkpoint.
func gpt2Small(tb testing.TB) *Model {
	m, err := OpenRandom("../../../testdata/gpt2-tokenizer", 0)
	require.NoError(tb, err)
	tb.Cleanup(m.Close)
	return m
}

// BenchmarkIGPrimitive times the integrated-gradients primitive — one
// prompt, one layer, 20 alphas, forward and backward — on a
// GPT-2-124M-shaped model, for the fast path (cached lower layers, only
// the target position above layer l) and for full recomputation, and
// reports the speed-up. Each op covers all 12 layers; the metrics are per
// layer.
func BenchmarkIGPrimitive(b *testing.B) {
	torch.SetNumThreads(runtime.NumCPU())
	m := gpt2Small(b)
	q := sdk.Query{Prompt: "The Eiffel Tower, the most famous landmark of the city, is located in", Answer: " Paris"}
	alphas := make([]float32, 20)
	for k := range alphas {
		alphas[k] = float32(k+1) / 20
	}
	run := func(fast bool) time.Duration {
		m.cache.close()
		m.cache = nil
		start := time.Now()
		for l := 0; l < m.cfg.NLayer; l++ {
			if _, err := m.gradients(sdk.GradientsRequest{Query: q, Layer: l, Alphas: alphas}, fast); err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start)
	}
	run(true) // warm up
	var fast, full time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fast += run(true)
		full += run(false)
	}
	layers := float64(b.N * m.cfg.NLayer)
	b.ReportMetric(fast.Seconds()/layers, "fast-s/layer")
	b.ReportMetric(full.Seconds()/layers, "full-s/layer")
	b.ReportMetric(full.Seconds()/fast.Seconds(), "speedup")
}

// BenchmarkNoise times one NoiseGrad sample's weight noise on a
// GPT-2-124M-shaped model: applying multiplicative noise to every weight and
// restoring the originals. NoiseGrad pays it once per sample and prompt, on
// top of the base method, so it must stay small against one prompt's
// attribution (knctl bench).
func BenchmarkNoise(b *testing.B) {
	torch.SetNumThreads(runtime.NumCPU())
	m := gpt2Small(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := m.ApplyNoise(ctx, sdk.NoiseSpec{Seed: int64(i), Sigma: 0.005}); err != nil {
			b.Fatal(err)
		}
		if err := m.RemoveNoise(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
