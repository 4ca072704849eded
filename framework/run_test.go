package framework

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/knctl/knctl/plugins/ig"
	"github.com/knctl/knctl/sdk"
	"github.com/knctl/knctl/sdk/sdktest"
)

// toyFacts are facts for the toy model plugin (sdktest.NewToy(3, 16, 32, 1)).
func toyFacts() []Fact {
	return []Fact{
		{ID: "paris", Relation: "capital", Subject: "france", Target: "paris", Templates: []string{
			"the capital of {subject} is", "{subject} has its capital in", "the city that governs {subject} is", "in {subject} the seat of government is"}},
		{ID: "berlin", Relation: "capital", Subject: "germany", Target: "berlin", Templates: []string{
			"the capital of {subject} is", "{subject} has its capital in", "the city that governs {subject} is", "in {subject} the seat of government is"}},
		{ID: "german", Relation: "language", Target: "german", Prompts: []string{
			"people in austria speak", "the language of vienna is", "austrians mostly speak", "the official language of austria is"}},
	}
}

var toyRules = Rules{Mode: Relative, Threshold: 0.2, P: 0.7, MinCount: 2}

func toyConfig(out string) RunConfig {
	return RunConfig{
		Model: "toy", Checkpoint: "toy", Attributor: "ig",
		AttributorOptions: map[string]string{"steps": "8", "quadrature": "gauss-legendre"},
		Rules:             toyRules, Out: out,
	}
}

// expected applies the rules to in-process integrated gradients on the
// same toy model the plugin serves.
func expected(t *testing.T, f Fact) ([]Neuron, [][]Neuron) {
	toy := sdktest.NewToy(3, 16, 32, 1)
	prompts, err := f.Queries()
	require.NoError(t, err)
	var coarse [][]Neuron
	for _, p := range prompts {
		res, err := ig.Attributor{}.Attribute(context.Background(), toy, sdk.AttributionQuery{Query: sdk.Query{Prompt: p, Answer: f.Target}},
			sdk.Options{Values: map[string]string{"steps": "8", "quadrature": "gauss-legendre"}})
		require.NoError(t, err)
		coarse = append(coarse, toyRules.Coarse(res.Layers, res.Scores))
	}
	n, _ := toyRules.Refine(coarse)
	if n == nil {
		n = []Neuron{}
	}
	return n, coarse
}

func TestRunMatchesInProcessPipeline(t *testing.T) {
	h := NewHost([]string{pluginDir(t)})
	defer h.Close()
	out := filepath.Join(t.TempDir(), "out.jsonl")
	facts := toyFacts()
	sum, err := h.Run(context.Background(), toyConfig(out), facts)
	require.NoError(t, err)
	assert.Equal(t, 3, sum.Done)
	assert.Empty(t, sum.Failed)
	results, _, err := ReadResults(out)
	require.NoError(t, err)
	require.Len(t, results, 3)
	someNeurons := false
	for i, r := range results {
		f := facts[i]
		wantN, wantC := expected(t, f)
		assert.Equal(t, f.ID, r.ID)
		assert.Equal(t, wantN, r.Neurons, f.ID)
		assert.Equal(t, wantC, r.Coarse, f.ID)
		assert.Len(t, r.NeuronScores, len(r.Neurons))
		assert.Len(t, r.NeuronCounts, len(r.Neurons))
		assert.Len(t, r.Prompts, 4)
		assert.Equal(t, "the capital of france is", results[0].Prompts[0])
		assert.Positive(t, r.Seconds)
		assert.Equal(t, int64(3*4*10), r.Passes, "3 layers x 4 prompts x (8 nodes + 2 ends)")
		assert.Less(t, r.MaxCompletenessError, 1e-5)
		someNeurons = someNeurons || len(r.Neurons) > 0
	}
	assert.True(t, someNeurons, "the toy facts have knowledge neurons")

	// Two workers give the same results.
	out2 := filepath.Join(t.TempDir(), "out.jsonl")
	cfg := toyConfig(out2)
	cfg.Workers = 2
	sum2, err := h.Run(context.Background(), cfg, facts)
	require.NoError(t, err)
	for i := range sum.Results {
		assert.Equal(t, sum.Results[i].Neurons, sum2.Results[i].Neurons)
		assert.Equal(t, sum.Results[i].Coarse, sum2.Results[i].Coarse)
	}
}

func TestRunRefusesToOverwriteAndResumes(t *testing.T) {
	h := NewHost([]string{pluginDir(t)})
	defer h.Close()
	out := filepath.Join(t.TempDir(), "out.jsonl")
	facts := toyFacts()
	_, err := h.Run(context.Background(), toyConfig(out), facts[:2])
	require.NoError(t, err)
	_, err = h.Run(context.Background(), toyConfig(out), facts)
	require.ErrorIs(t, err, sdk.ErrInvalidInput)
	assert.Contains(t, err.Error(), "--resume")

	// A crash tore the last line: resume repairs it and runs what is missing.
	f, err := os.OpenFile(out, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString(`{"id":"german","neur`)
	require.NoError(t, err)
	f.Close()
	cfg := toyConfig(out)
	cfg.Resume = true
	sum, err := h.Run(context.Background(), cfg, facts)
	require.NoError(t, err)
	assert.Equal(t, 2, sum.Skipped)
	assert.Equal(t, 1, sum.Done)
	results, _, err := ReadResults(out)
	require.NoError(t, err)
	ids := []string{}
	for _, r := range results {
		ids = append(ids, r.ID)
	}
	assert.Equal(t, []string{"paris", "berlin", "german"}, ids)
	b, _ := os.ReadFile(out)
	assert.True(t, strings.HasSuffix(string(b), "}\n"))

	// Nothing left: a second resume runs nothing.
	sum, err = h.Run(context.Background(), cfg, facts)
	require.NoError(t, err)
	assert.Equal(t, 3, sum.Skipped)
	assert.Zero(t, sum.Done)
}

func TestRunGoesOnAfterCrashedPlugin(t *testing.T) {
	h := NewHost([]string{pluginDir(t)})
	defer h.Close()
	facts := toyFacts()
	crash := Fact{ID: "boom", Target: "x", Prompts: []string{"a prompt that kills __crash__ the plugin"}}
	bad := Fact{ID: "bad", Target: "  ", Prompts: []string{"x"}}
	all := []Fact{facts[0], crash, facts[1], bad, facts[2]}
	out := filepath.Join(t.TempDir(), "out.jsonl")
	sum, err := h.Run(context.Background(), toyConfig(out), all)
	require.NoError(t, err)
	assert.Equal(t, 3, sum.Done)
	require.Len(t, sum.Failed, 2)
	assert.Equal(t, "boom", sum.Failed[0].ID)
	assert.Contains(t, sum.Failed[0].Err, "model plugin toy")
	assert.Equal(t, "bad", sum.Failed[1].ID)
	results, _, err := ReadResults(out)
	require.NoError(t, err)
	assert.Len(t, results, 3, "failed facts are not written, so --resume retries them")

	// Fail-fast stops at the crash.
	cfg := toyConfig(filepath.Join(t.TempDir(), "out.jsonl"))
	cfg.FailFast = true
	sum, err = h.Run(context.Background(), cfg, all)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `fact "boom"`)
	assert.Equal(t, 1, sum.Done)
}

func TestRunHungPlugin(t *testing.T) {
	h := NewHost([]string{pluginDir(t)})
	h.CallTimeout = time.Second
	defer h.Close()
	facts := toyFacts()
	hang := Fact{ID: "hang", Target: "x", Prompts: []string{"__hang__"}}
	sum, err := h.Run(context.Background(), toyConfig(""), []Fact{hang, facts[0]})
	require.NoError(t, err)
	require.Len(t, sum.Failed, 1)
	assert.Contains(t, sum.Failed[0].Err, "no progress within 1s")
	assert.Equal(t, 1, sum.Done, "the next fact runs on a fresh plugin")
}

func TestRunCancelledKeepsFinishedFacts(t *testing.T) {
	h := NewHost([]string{pluginDir(t)})
	defer h.Close()
	ctx, cancel := context.WithCancel(context.Background())
	out := filepath.Join(t.TempDir(), "out.jsonl")
	facts := toyFacts()
	facts = append(facts[:1], Fact{ID: "slow", Target: "x", Prompts: []string{"__hang__"}})
	go func() {
		// Cancel once the first fact is on disk.
		for {
			if b, _ := os.ReadFile(out); strings.Count(string(b), "\n") == 1 {
				cancel()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	sum, err := h.Run(ctx, toyConfig(out), facts)
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, 1, sum.Done)
	assert.Empty(t, sum.Failed, "an interrupted fact is not a failure")
	results, _, err := ReadResults(out)
	require.NoError(t, err)
	assert.Len(t, results, 1)
}

func TestRunAdaptiveP(t *testing.T) {
	h := NewHost([]string{pluginDir(t)})
	defer h.Close()
	cfg := toyConfig("")
	cfg.AdaptiveP = true
	sum, err := h.Run(context.Background(), cfg, toyFacts())
	require.NoError(t, err)
	byRel := map[string][][][]Neuron{}
	for _, r := range sum.Results {
		byRel[r.Relation] = append(byRel[r.Relation], r.Coarse)
	}
	for _, r := range sum.Results {
		p, _ := toyRules.AdaptP(byRel[r.Relation])
		assert.InDelta(t, p, r.P, 1e-9, r.ID)
		rules := toyRules
		rules.P = p
		want, _ := rules.Refine(r.Coarse)
		if want == nil {
			want = []Neuron{}
		}
		assert.Equal(t, want, r.Neurons, r.ID)
	}
}

func TestRunBadSetup(t *testing.T) {
	h := NewHost([]string{pluginDir(t)})
	defer h.Close()
	cfg := toyConfig("")
	cfg.Model = "llama"
	_, err := h.Run(context.Background(), cfg, toyFacts())
	assert.ErrorContains(t, err, `unknown model plugin "llama"`)
	cfg = toyConfig("")
	cfg.Checkpoint = "elsewhere"
	_, err = h.Run(context.Background(), cfg, toyFacts())
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
	cfg = toyConfig("")
	cfg.AttributorOptions = map[string]string{"stepz": "3"}
	sum, err := h.Run(context.Background(), cfg, toyFacts()[:1])
	require.NoError(t, err)
	require.Len(t, sum.Failed, 1)
	assert.Contains(t, sum.Failed[0].Err, `unknown option "stepz"`)
	_, err = h.Run(context.Background(), toyConfig(""), nil)
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
}

func TestReadFacts(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, fmt.Sprintf("f%d.jsonl", len(s)))
		require.NoError(t, os.WriteFile(p, []byte(s), 0o644))
		return p
	}
	facts, err := ReadFacts(write(`{"id":"a","relation":"r","subject":"France","target":" Paris","templates":["The capital of {subject} is"]}

{"id":"b","target":" Berlin","prompts":["Germany's capital is"]}
`))
	require.NoError(t, err)
	require.Len(t, facts, 2)
	q, err := facts[0].Queries()
	require.NoError(t, err)
	assert.Equal(t, []string{"The capital of France is"}, q)

	for content, msg := range map[string]string{
		`{"id":"a","target":"x"}`:                                                                    "no prompts",
		`{"id":"a","target":"","prompts":["p"]}`:                                                     "empty target",
		`{"id":"a","target":"x","templates":["no slot"],"subject":"s"}`:                              "no {subject} slot",
		`{"id":"a","target":"x","templates":["{subject} is"]}`:                                       "need a subject",
		`{"id":"a","target":"x","prompts":["p"]}` + "\n" + `{"id":"a","target":"y","prompts":["q"]}`: "already used on line 1",
		`{"id":"a","target":"x","promts":["p"]}`:                                                     "unknown field",
		`not json`:                                                                                   ":1:",
		``:                                                                                           "no facts",
	} {
		_, err := ReadFacts(write(content))
		require.Error(t, err, content)
		assert.ErrorIs(t, err, sdk.ErrInvalidInput)
		assert.Contains(t, err.Error(), msg, content)
	}
	_, err = ReadFacts(filepath.Join(dir, "missing.jsonl"))
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
}
