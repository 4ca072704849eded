package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/knctl/knctl/framework"
)

// eleutherRun runs the GPT-2 fixture's facts with EleutherAI's settings and
// returns the facts file and the result file.
func eleutherRun(t *testing.T) (facts, results string) {
	facts, _, _ = fixtureFacts(t)
	results = filepath.Join(t.TempDir(), "kn.jsonl")
	_, err := run(t, "run", "--checkpoint", fixture, "--facts", facts, "--quadrature", "eleutherai", "--threshold", "0.3",
		"--p", "0.5", "--min-count", "1", "--strict", "--hook", "pre", "--out", results, "--quiet")
	require.NoError(t, err)
	return facts, results
}

type editOut struct {
	Neurons []framework.Neuron `json:"neurons"`
	Prompts []struct {
		Fact   string  `json:"fact"`
		Own    bool    `json:"own"`
		Prompt string  `json:"prompt"`
		Target string  `json:"target"`
		Before float64 `json:"prob_before"`
		After  float64 `json:"prob_after"`
		TopA   string  `json:"top_after"`
	} `json:"prompts"`
}

func TestEditSuppressMatchesEleutherAI(t *testing.T) {
	_, results := eleutherRun(t)
	out, err := run(t, "edit", "suppress", "--checkpoint", fixture, "--from", results, "--fact", "f0", "--hook", "pre", "--json")
	require.NoError(t, err)
	var got editOut
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	assert.Equal(t, []framework.Neuron{{0, 11}, {1, 142}}, got.Neurons)
	// EleutherAI's suppress of the fact's refined neurons (reference.json).
	want := map[string]float64{"The capital of France is": 1.03361934e-07}
	found := false
	for _, p := range got.Prompts {
		if w, ok := want[p.Prompt]; ok && p.Own {
			assert.InEpsilon(t, w, p.After, 1e-4)
			found = true
		}
	}
	assert.True(t, found)
	var others int
	for _, p := range got.Prompts {
		if !p.Own {
			others++
			assert.NotEqual(t, "f0", p.Fact)
		}
	}
	assert.Positive(t, others, "unrelated facts are shown")

	human, err := run(t, "edit", "amplify", "--checkpoint", fixture, "--neuron", "0:11", "--prompt", "The capital of France is", "--target", " Paris")
	require.NoError(t, err)
	assert.Contains(t, human, "amplify 1 neurons (activations x2)")
}

func TestEditUpdateSavesCheckpoint(t *testing.T) {
	_, results := eleutherRun(t)
	dir := filepath.Join(t.TempDir(), "edited")
	out, err := run(t, "edit", "update", "--checkpoint", fixture, "--from", results, "--fact", "f0",
		"--target-new", " London", "--save", dir, "--json")
	require.NoError(t, err)
	var got editOut
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	var after float64
	for _, p := range got.Prompts {
		if p.Own && p.Target == " London" && p.Prompt == "The capital of France is" {
			after = p.After
			assert.Greater(t, p.After, p.Before)
		}
	}
	require.Positive(t, after)
	// The saved checkpoint has the edit in place.
	pred, err := run(t, "predict", "--checkpoint", dir, "--prompt", "The capital of France is", "--target", " London", "--json")
	require.NoError(t, err)
	var p struct {
		TargetProb float64 `json:"target_prob"`
	}
	require.NoError(t, json.Unmarshal([]byte(pred), &p))
	assert.InEpsilon(t, after, p.TargetProb, 1e-5)
	for _, f := range []string{"config.json", "model.safetensors", "vocab.json", "merges.txt"} {
		assert.FileExists(t, filepath.Join(dir, f))
	}
}

func TestEditBadInput(t *testing.T) {
	_, results := eleutherRun(t)
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"edit", "suppress", "--checkpoint", fixture, "--neuron", "5:1", "--prompt", "x", "--target", " y"}, "neuron 5:1: out of range"},
		{[]string{"edit", "suppress", "--checkpoint", fixture, "--neuron", "0-1", "--prompt", "x", "--target", " y"}, "LAYER:INDEX"},
		{[]string{"edit", "suppress", "--checkpoint", fixture, "--from", "/nonexistent.jsonl", "--fact", "f0"}, "nonexistent"},
		{[]string{"edit", "suppress", "--checkpoint", fixture, "--from", results, "--fact", "nope"}, `--fact "nope"`},
		{[]string{"edit", "update", "--checkpoint", fixture, "--from", results, "--fact", "f0", "--target-new", " Londonderry Castle"}, "single token"},
		{[]string{"edit", "update", "--checkpoint", fixture, "--from", results, "--fact", "f0"}, "--target-new"},
		{[]string{"edit", "erase", "--checkpoint", fixture, "--from", results, "--fact", "f0", "--to", "unk"}, "no [UNK]"},
		{[]string{"edit", "erase", "--checkpoint", fixture, "--from", results, "--fact", "f1"}, "no neurons"},
	} {
		_, err := run(t, c.args...)
		require.Error(t, err, strings.Join(c.args, " "))
		assert.Contains(t, err.Error(), c.msg)
	}
}

func TestEvalAndCompare(t *testing.T) {
	facts, results := eleutherRun(t)
	outFile := filepath.Join(t.TempDir(), "eval.json")
	out, err := run(t, "eval", "--checkpoint", fixture, "--facts", facts, "--neurons", results, "--hook", "pre",
		"--others", "1", "--probe", "1", "--erase-top", "2", "--json", "--out", outFile)
	require.NoError(t, err)
	var rep evalReport
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	assert.Equal(t, 3, rep.Facts)
	assert.Equal(t, 2, rep.WithNeurons)
	assert.Equal(t, 2, rep.Suppress.Facts)
	assert.Equal(t, 8, rep.Suppress.Own.N, "2 facts x 4 prompts")
	assert.Equal(t, 8, rep.Suppress.RandomOn.N, "the random control")
	// f2 is alone in its relation, so no other answer to update it to.
	assert.Equal(t, 1, rep.Update.Facts)
	assert.Equal(t, 1, rep.UpdateRandom.Facts)
	assert.NotEmpty(t, rep.Erase)
	assert.Len(t, rep.EraseRandom, len(rep.Erase))
	assert.FileExists(t, outFile)
	human, err := run(t, "eval", "--checkpoint", fixture, "--facts", facts, "--neurons", results, "--others", "1", "--probe", "1", "--erase-top", "0")
	require.NoError(t, err)
	assert.Contains(t, human, "suppress: random neurons")
	assert.Contains(t, human, "update (dai rule)")

	csvFile := filepath.Join(t.TempDir(), "cmp.csv")
	jsonl := filepath.Join(t.TempDir(), "cmp.jsonl")
	out, err = run(t, "compare", "--checkpoint", fixture, "--facts", facts, "--method", "ig", "--method", "ig:quadrature=gauss-legendre,steps=6",
		"--prompts-per-fact", "1,4", "--others", "1", "--json", "--csv", csvFile, "--out", jsonl)
	require.NoError(t, err)
	var rows []framework.CompareRow
	require.NoError(t, json.Unmarshal([]byte(out), &rows))
	require.Len(t, rows, 4)
	for _, r := range rows {
		if r.Method == "ig" && r.Budget == 4 {
			assert.Equal(t, 1.0, r.Jaccard, "the reference reproduces itself")
		}
	}
	b, err := os.ReadFile(csvFile)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(b), "method,prompts_per_fact,facts,neurons_per_fact,precision"))
	assert.Equal(t, 5, strings.Count(string(b), "\n"))
	b, err = os.ReadFile(jsonl)
	require.NoError(t, err)
	assert.Equal(t, 2*2*3, strings.Count(string(b), "\n"))

	_, err = run(t, "eval", "--checkpoint", fixture, "--facts", facts)
	assert.ErrorContains(t, err, "--neurons")
	_, err = run(t, "compare", "--checkpoint", fixture, "--facts", facts, "--prompts-per-fact", "0")
	assert.ErrorContains(t, err, "--prompts-per-fact")
}
