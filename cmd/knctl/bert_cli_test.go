package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/knctl/knctl/framework"
	"github.com/knctl/knctl/internal/testbin"
	"github.com/knctl/knctl/sdk"
)

var bertFixture = filepath.Join(testbin.Root(), "testdata", "bert-tiny")

var bertPlugin struct {
	sync.Mutex
	dir string
}

// bertPluginDir builds the BERT model plugin, once, into a folder of its
// own inside testbin's directory (so testbin.Cleanup removes it). A folder
// of its own keeps it out of the plugin list the GPT-2 tests see in
// testbin's directory.
func bertPluginDir(t *testing.T) string {
	t.Helper()
	plugins(t) // testbin's directory exists from here on
	bertPlugin.Lock()
	defer bertPlugin.Unlock()
	dir := filepath.Join(testbin.Dir(), "bert-plugin")
	if bertPlugin.dir == dir {
		return dir
	}
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "knctl-model-bert"), "./plugins/models/bert/cmd/knctl-model-bert")
	cmd.Dir = testbin.Root()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build knctl-model-bert: %v\n%s", err, b)
	}
	bertPlugin.dir = dir
	return dir
}

// runBert is run with the BERT model plugin's folder searched too.
func runBert(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return run(t, append(args, "--plugin-dir", bertPluginDir(t))...)
}

// bertReference is the part of testdata/bert-tiny/reference.json (written
// by transformers and the EleutherAI knowledge-neurons library) these tests
// use.
type bertReference struct {
	Facts []struct {
		Fact      string             `json:"fact"`
		Target    string             `json:"target"`
		TargetID  int                `json:"target_id"`
		KNRefined []framework.Neuron `json:"kn_refined"`
		Prompts   []struct {
			Text     string             `json:"text"`
			InputIDs []int              `json:"input_ids"`
			Tokens   []string           `json:"tokens"`
			Position int                `json:"position"`
			TargetP  float64            `json:"target_prob"`
			FFNPre   [][]float64        `json:"ffn_pre"`
			FFNPost  [][]float64        `json:"ffn_post"`
			KNScores [][]float64        `json:"kn_scores"`
			KNCoarse []framework.Neuron `json:"kn_coarse"`
			Top10    []struct {
				ID    int     `json:"id"`
				Token string  `json:"token"`
				Prob  float64 `json:"prob"`
			} `json:"top10"`
		} `json:"prompts"`
	} `json:"facts"`
}

func loadBertReference(t *testing.T) bertReference {
	b, err := os.ReadFile(filepath.Join(bertFixture, "reference.json"))
	require.NoError(t, err)
	var r bertReference
	require.NoError(t, json.Unmarshal(b, &r))
	require.Len(t, r.Facts, 3)
	return r
}

func TestBertPredictJSON(t *testing.T) {
	r := loadBertReference(t)
	f := r.Facts[0]
	p := f.Prompts[0]
	out, err := runBert(t, "predict", "--model", "bert", "--checkpoint", bertFixture, "--prompt", p.Text, "--target", f.Target, "--top", "10", "--json")
	require.NoError(t, err)
	var got struct {
		Tokens          []string        `json:"tokens"`
		InputIDs        []int           `json:"input_ids"`
		TargetPositions []int           `json:"target_positions"`
		TargetIDs       []int           `json:"target_ids"`
		TargetTokens    []string        `json:"target_tokens"`
		TargetTokenProb []float64       `json:"target_token_probs"`
		TargetProb      float64         `json:"target_prob"`
		TargetRank      *int            `json:"target_rank"`
		Top             []sdk.TokenProb `json:"top"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	assert.Equal(t, p.Tokens, got.Tokens)
	assert.Equal(t, p.InputIDs, got.InputIDs)
	assert.Equal(t, []int{p.Position}, got.TargetPositions)
	assert.Equal(t, []int{f.TargetID}, got.TargetIDs)
	assert.Equal(t, []string{"paris"}, got.TargetTokens)
	require.Len(t, got.TargetTokenProb, 1)
	assert.InEpsilon(t, p.TargetP, got.TargetProb, 1e-4)
	require.NotNil(t, got.TargetRank)
	require.Len(t, got.Top, 10)
	for i, want := range p.Top10 {
		assert.Equal(t, want.ID, got.Top[i].ID)
		assert.Equal(t, want.Token, got.Top[i].Token)
		assert.InEpsilon(t, want.Prob, got.Top[i].Prob, 1e-4)
	}
	var above int
	for _, tp := range got.Top {
		if tp.Prob > got.TargetProb {
			above++
		}
	}
	if above < 10 {
		assert.Equal(t, above, *got.TargetRank)
	}

	// A target of several word pieces fills one [MASK] per piece.
	out, err = runBert(t, "predict", "--model", "bert", "--checkpoint", bertFixture, "--prompt", "Zorvia's capital is [MASK].", "--target", "Kelmar", "--json")
	require.NoError(t, err)
	got.TargetTokenProb = nil
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	assert.Equal(t, []string{"k", "##e", "##l", "##m", "##a", "##r"}, got.TargetTokens)
	assert.Equal(t, []int{10, 11, 12, 13, 14, 15}, got.TargetPositions)
	prod := 1.0
	for _, x := range got.TargetTokenProb {
		prod *= x
	}
	assert.InEpsilon(t, prod, got.TargetProb, 1e-9)

	human, err := runBert(t, "predict", "--model", "bert", "--checkpoint", bertFixture, "--prompt", p.Text, "--target", f.Target)
	require.NoError(t, err)
	assert.Contains(t, human, `target "paris"`)
	assert.Contains(t, human, "top 10 at position 6")
}

func TestBertActivationsJSON(t *testing.T) {
	p := loadBertReference(t).Facts[2].Prompts[0]
	for hook, want := range map[string][][]float64{"pre": p.FFNPre, "post": p.FFNPost} {
		out, err := runBert(t, "activations", "--model", "bert", "--checkpoint", bertFixture, "--prompt", p.Text, "--hook", hook, "--json")
		require.NoError(t, err)
		var got struct {
			Hook      string      `json:"hook"`
			LayerIDs  []int       `json:"layer_ids"`
			Positions []int       `json:"positions"`
			Layers    [][]float64 `json:"layers"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &got))
		assert.Equal(t, hook, got.Hook)
		assert.Equal(t, []int{0, 1}, got.LayerIDs)
		assert.Equal(t, []int{p.Position}, got.Positions)
		require.Len(t, got.Layers, len(want))
		for l := range want {
			require.Len(t, got.Layers[l], len(want[l]))
			for i := range want[l] {
				require.InDelta(t, want[l][i], got.Layers[l][i], 1e-4, "%s %d:%d", hook, l, i)
			}
		}
	}
}

func TestBertAttributeJSON(t *testing.T) {
	f := loadBertReference(t).Facts[1]
	p := f.Prompts[2]
	out, err := runBert(t, "attribute", "--model", "bert", "--checkpoint", bertFixture, "--prompt", p.Text, "--target", f.Target, "--quadrature", "eleutherai", "--json")
	require.NoError(t, err)
	var got struct {
		Prompt string      `json:"prompt"`
		Target string      `json:"target"`
		Hook   string      `json:"hook"`
		Layers []int       `json:"layers"`
		Scores [][]float64 `json:"scores"`
		Diag   []struct {
			CompletenessError float64 `json:"completeness_error"`
		} `json:"layer_diagnostics"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	assert.Equal(t, "post", got.Hook)
	assert.Equal(t, []int{0, 1}, got.Layers)
	var scale float64
	for _, row := range p.KNScores {
		for _, x := range row {
			scale = max(scale, abs(x))
		}
	}
	require.Len(t, got.Scores, len(p.KNScores))
	for l := range p.KNScores {
		for i := range p.KNScores[l] {
			require.InDelta(t, p.KNScores[l][i], got.Scores[l][i], 1e-5*scale, "%d:%d", l, i)
		}
	}
	require.Len(t, got.Diag, 2)

	// A multi-piece target: the attributor sums each neuron's scores over
	// the six masks, and with Gauss-Legendre nodes integrated gradients are
	// complete for the joint probability.
	out, err = runBert(t, "attribute", "--model", "bert", "--checkpoint", bertFixture, "--prompt", "Zorvia's capital is [MASK].", "--target", "kelmar",
		"--quadrature", "gauss-legendre", "--steps", "32", "--json")
	require.NoError(t, err)
	var multi struct {
		Scores [][]float64 `json:"scores"`
		Diag   []struct {
			ProbFull          float64 `json:"prob_full"`
			ProbBaseline      float64 `json:"prob_baseline"`
			CompletenessError float64 `json:"completeness_error"`
		} `json:"layer_diagnostics"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &multi))
	require.Len(t, multi.Scores, 2)
	require.Len(t, multi.Scores[0], 256)
	for _, d := range multi.Diag {
		assert.Less(t, abs(d.CompletenessError), 1e-3*(d.ProbFull+d.ProbBaseline))
	}
}

// bertFactsFile writes the fixture's 3 facts x 4 prompts as a --facts file.
func bertFactsFile(t *testing.T, r bertReference) string {
	var lines []string
	for i, f := range r.Facts {
		fact := framework.Fact{ID: fmt.Sprintf("bert%d", i), Relation: strings.SplitN(f.Fact, "(", 2)[0], Target: f.Target}
		for _, p := range f.Prompts {
			fact.Prompts = append(fact.Prompts, p.Text)
		}
		line, err := json.Marshal(fact)
		require.NoError(t, err)
		lines = append(lines, string(line))
	}
	path := filepath.Join(t.TempDir(), "facts.jsonl")
	require.NoError(t, os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
	return path
}

// TestBertRunReproducesEleutherAI runs the pipeline on the BERT fixture with
// the EleutherAI library's settings (its BERT neurons are the
// post-activation ones, knctl's default) and gets each fact's coarse and
// refined neurons.
func TestBertRunReproducesEleutherAI(t *testing.T) {
	r := loadBertReference(t)
	out, err := runBert(t, "run", "--model", "bert", "--checkpoint", bertFixture, "--facts", bertFactsFile(t, r),
		"--quadrature", "eleutherai", "--threshold", "0.3", "--p", "0.5", "--min-count", "1", "--strict",
		"--json", "--quiet")
	require.NoError(t, err)
	var res []framework.FactResult
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var fr framework.FactResult
		require.NoError(t, json.Unmarshal([]byte(line), &fr), line)
		res = append(res, fr)
	}
	require.Len(t, res, len(r.Facts))
	for i, fr := range res {
		f := r.Facts[i]
		require.NotEmpty(t, f.KNRefined)
		assert.Equal(t, f.KNRefined, fr.Neurons, fr.ID)
		require.Len(t, fr.Coarse, len(f.Prompts))
		for j, p := range f.Prompts {
			assert.Equal(t, p.KNCoarse, fr.Coarse[j], "%s prompt %d", fr.ID, j)
		}
		assert.Equal(t, "bert", fr.Model)
		assert.Equal(t, "ig", fr.Attributor)
		var mean float64
		for _, p := range f.Prompts {
			mean += p.TargetP / float64(len(f.Prompts))
		}
		assert.InEpsilon(t, mean, fr.AnswerProb, 1e-4, fr.ID)
	}
}

// TestBertBadInputExitCodes runs the knctl binary: a prompt without a mask
// slot, or an answer the vocabulary cannot spell, exits 2 with a message
// naming the input and leaves stdout empty.
func TestBertBadInputExitCodes(t *testing.T) {
	bertDir := bertPluginDir(t)
	knctl := testbin.Build(t, "./cmd/knctl")
	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no mask", []string{"predict", "--model", "bert", "--checkpoint", bertFixture, "--prompt", "The capital of France is Paris."}, 2, "exactly one mask slot [MASK]"},
		{"two masks", []string{"predict", "--model", "bert", "--checkpoint", bertFixture, "--prompt", "[MASK] of France is [MASK]."}, 2, "has 2 [MASK] tokens"},
		{"unknown answer", []string{"predict", "--model", "bert", "--checkpoint", bertFixture, "--prompt", "The capital of France is [MASK].", "--target", "ß"}, 2, `answer "ß"`},
		{"too long", []string{"activations", "--model", "bert", "--checkpoint", bertFixture, "--prompt", strings.Repeat("word ", 70) + "[MASK]"}, 2, "max_position_embeddings=64"},
		{"gpt2 checkpoint", []string{"predict", "--model", "bert", "--checkpoint", fixture, "--prompt", "x [MASK]"}, 2, `model_type "gpt2"`},
		{"ok", []string{"predict", "--model", "bert", "--checkpoint", bertFixture, "--prompt", "The capital of France is [MASK].", "--json"}, 0, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(knctl, append(c.args, "--plugin-dir", bertDir)...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			}
			assert.Equal(t, c.code, code, stderr.String())
			assert.Contains(t, stderr.String(), c.msg)
			if c.code != 0 {
				assert.Empty(t, stdout.String(), "no partial output on error")
			}
		})
	}
}
