package gpt2

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/sugarme/gotch/ts"

	"github.com/knctl/knctl/internal/testbin"
	"github.com/knctl/knctl/plugins/models/tokenize"
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

// randomModel builds an in-memory GPT-2 of the given shape with random
// weights and the real GPT-2 tokenizer (benchmarks need no checkpoint).
func randomModel(tb testing.TB, cfg Config) *Model {
	tb.Helper()
	tok, err := tokenize.LoadGPT2("../../../testdata/gpt2-tokenizer")
	require.NoError(tb, err)
	act, err := torch.ActivationByName(cfg.Activation)
	require.NoError(tb, err)
	torch.ManualSeed(0)
	s := torch.NewScope()
	defer s.Close()
	params := map[string]*ts.Tensor{}
	for _, spec := range paramSpecs(cfg) {
		params[spec.Name] = s.Keep(s.Scale(s.Randn(spec.Shape...), 0.05))
	}
	require.NoError(tb, s.Err())
	m := &Model{cfg: cfg, tok: tok, w: torch.NewStore(params), act: act}
	tb.Cleanup(m.Close)
	return m
}

func gpt2Small() Config {
	t := true
	return Config{VocabSize: 50257, NPositions: 1024, NEmbd: 768, NLayer: 12, NHead: 12, Activation: "gelu_new", LayerNormEps: 1e-5, ScaleAttnWeights: &t}
}

// BenchmarkIGPrimitive times the integrated-gradients primitive — one
// prompt, one layer, 20 alphas, forward and backward — on a
// GPT-2-124M-shaped model, for the fast path (cached lower layers, only
// the target position above layer l) and for full recomputation, and
// reports the speed-up. Each op covers all 12 layers; the metrics are per
// layer.
func BenchmarkIGPrimitive(b *testing.B) {
	torch.SetNumThreads(0)
	m := randomModel(b, gpt2Small())
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
	_ = context.Background()
}
