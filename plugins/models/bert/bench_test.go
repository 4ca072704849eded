package bert

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
	conformance.ModelPlugin(t, testbin.Build(t, "./plugins/models/bert/cmd/knctl-model-bert"), fixture, conformance.ModelCase{
		Prompt: "The capital of France is [MASK].", Answer: "paris",
	})
}

// bertBase is a BERT-base-shaped model (bert-base-uncased's config.json:
// 12 layers, hidden 768, FFN 3072, vocabulary 30522) with random weights;
// its tokenizer is the fixture's small vocabulary, which is all a benchmark
// needs: only the shapes matter.
func bertBase(tb testing.TB) *Model {
	m, err := OpenRandom("testdata/bert-base-random", 0)
	require.NoError(tb, err)
	tb.Cleanup(m.Close)
	return m
}

// BenchmarkIGPrimitive times the integrated-gradients primitive — one
// prompt, one layer, 20 alphas, forward and backward — on a
// BERT-base-shaped model, for the fast path (layers below l cached, layer
// l's attention reused, the last layer only at the [MASK]) and for full
// recomputation, and reports both and the speed-up. Each op covers all 12
// layers; the metrics are per (prompt, layer).
func BenchmarkIGPrimitive(b *testing.B) {
	torch.SetNumThreads(runtime.NumCPU())
	m := bertBase(b)
	// 19 tokens with [CLS] and [SEP], as bert-base-uncased's own vocabulary
	// splits it too.
	q := sdk.Query{Prompt: "The Eiffel Tower, the most famous tower of the city, is located in [MASK].", Answer: "paris"}
	enc, err := m.Tokenize(context.Background(), q.Prompt)
	require.NoError(b, err)
	require.Len(b, enc.IDs, 17)
	alphas := make([]float32, 20)
	for k := range alphas {
		alphas[k] = float32(k+1) / 20
	}
	run := func(fast bool) time.Duration {
		m.cache.close()
		m.cache = nil
		start := time.Now()
		for l := 0; l < m.cfg.NumHiddenLayers; l++ {
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
	layers := float64(b.N * m.cfg.NumHiddenLayers)
	b.ReportMetric(fast.Seconds()/layers, "fast-s/layer")
	b.ReportMetric(full.Seconds()/layers, "full-s/layer")
	b.ReportMetric(full.Seconds()/fast.Seconds(), "speedup")
}
