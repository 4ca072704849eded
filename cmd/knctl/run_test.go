package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/knctl/knctl/framework"
	"github.com/knctl/knctl/internal/testbin"
)

// fixtureFacts writes the GPT-2 fixture's facts as a --facts file and
// returns it with the reference's refined and coarse neurons.
func fixtureFacts(t *testing.T) (path string, refined [][]framework.Neuron, coarse [][][]framework.Neuron) {
	b, err := os.ReadFile(filepath.Join(fixture, "reference.json"))
	require.NoError(t, err)
	var r struct {
		Facts []struct {
			Fact      string             `json:"fact"`
			Target    string             `json:"target"`
			KNRefined []framework.Neuron `json:"kn_refined"`
			Prompts   []struct {
				Text     string             `json:"text"`
				KNCoarse []framework.Neuron `json:"kn_coarse"`
			} `json:"prompts"`
		} `json:"facts"`
	}
	require.NoError(t, json.Unmarshal(b, &r))
	var lines []string
	for i, f := range r.Facts {
		fact := framework.Fact{ID: fmt.Sprintf("f%d", i), Relation: strings.SplitN(f.Fact, "(", 2)[0], Target: f.Target}
		var c [][]framework.Neuron
		for _, p := range f.Prompts {
			fact.Prompts = append(fact.Prompts, p.Text)
			c = append(c, p.KNCoarse)
		}
		line, _ := json.Marshal(fact)
		lines = append(lines, string(line))
		if f.KNRefined == nil {
			f.KNRefined = []framework.Neuron{}
		}
		refined = append(refined, f.KNRefined)
		coarse = append(coarse, c)
	}
	path = filepath.Join(t.TempDir(), "facts.jsonl")
	require.NoError(t, os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
	return path, refined, coarse
}

func decodeResults(t *testing.T, out string) []framework.FactResult {
	var res []framework.FactResult
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r framework.FactResult
		require.NoError(t, json.Unmarshal([]byte(line), &r), line)
		res = append(res, r)
	}
	return res
}

// TestRunReproducesEleutherAI runs the pipeline with the EleutherAI
// library's settings and gets its coarse and refined neurons.
func TestRunReproducesEleutherAI(t *testing.T) {
	facts, refined, coarse := fixtureFacts(t)
	out, err := run(t, "run", "--model", "gpt2", "--checkpoint", fixture, "--facts", facts,
		"--quadrature", "eleutherai", "--threshold", "0.3", "--p", "0.5", "--min-count", "1", "--strict", "--hook", "pre",
		"--json", "--quiet")
	require.NoError(t, err)
	res := decodeResults(t, out)
	require.Len(t, res, len(refined))
	for i, r := range res {
		assert.Equal(t, refined[i], r.Neurons, r.ID)
		assert.Equal(t, coarse[i], r.Coarse, r.ID)
		assert.Equal(t, "gpt2", r.Model)
		assert.Equal(t, "ig", r.Attributor)
	}
}

func TestRunOneFactHuman(t *testing.T) {
	dir := t.TempDir()
	outFile := filepath.Join(dir, "out.jsonl")
	out, err := run(t, "run", "--attributor", "ig", "--model", "gpt2", "--checkpoint", fixture,
		"--prompt", "The capital of France is", "--prompt", "France's capital city is",
		"--prompt", "The Eiffel Tower is located in the city of", "--target", " Paris",
		"--threshold", "0.3", "--p", "0.5", "--min-count", "1", "--strict", "--hook", "pre", "--quadrature", "eleutherai",
		"--out", outFile, "--quiet")
	require.NoError(t, err)
	assert.Contains(t, out, `fact fact: target " Paris", 3 prompts`)
	assert.Contains(t, out, "layer  index  mean score  prompts")
	assert.Contains(t, out, "1 facts: 1 done")
	res, _, err := framework.ReadResults(outFile)
	require.NoError(t, err)
	require.Len(t, res, 1)
	for _, n := range res[0].Neurons {
		assert.Regexp(t, fmt.Sprintf(`(?m)^\s+%d\s+%d\s`, n.Layer(), n.Index()), out)
	}
	_, err = run(t, "run", "--checkpoint", fixture, "--prompt", "x", "--target", " y", "--out", outFile)
	assert.ErrorContains(t, err, "--resume")
}

func TestRunBadInput(t *testing.T) {
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"run", "--checkpoint", fixture}, "--prompt (repeatable)"},
		{[]string{"run", "--checkpoint", fixture, "--prompt", "x"}, "--target"},
		{[]string{"run", "--checkpoint", fixture, "--prompt", "x", "--target", " y", "--threshold-mode", "median"}, "threshold mode"},
		{[]string{"run", "--checkpoint", fixture, "--prompt", "x", "--target", " y", "--p", "2"}, "p 2"},
		{[]string{"run", "--checkpoint", fixture, "--prompt", "x", "--target", " y", "--workers", "0"}, "--workers"},
		{[]string{"run", "--checkpoint", fixture, "--prompt", "x", "--target", " y", "--option", "steps"}, "key=value"},
		{[]string{"run", "--checkpoint", fixture, "--facts", "/nonexistent.jsonl"}, "nonexistent"},
		{[]string{"run", "--checkpoint", fixture, "--prompt", "x", "--target", " y", "--attributor", "shap"}, `unknown attributor plugin "shap"`},
		{[]string{"run", "--checkpoint", fixture, "--prompt", "x", "--target", " y", "--resume"}, "--resume needs --out"},
	} {
		_, err := run(t, c.args...)
		require.Error(t, err, c.args)
		assert.Contains(t, err.Error(), c.msg)
	}
	// A fact the model rejects fails alone; the run reports it.
	out, err := run(t, "run", "--checkpoint", fixture, "--prompt", strings.Repeat("word ", 70), "--target", " y", "--quiet")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "1 of 1 facts failed")
	assert.Contains(t, out, "n_positions=64")
}

func TestAttributeJSON(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(fixture, "reference.json"))
	require.NoError(t, err)
	var r struct {
		Facts []struct {
			Target  string `json:"target"`
			Prompts []struct {
				Text   string      `json:"text"`
				IGPost [][]float64 `json:"ig_post"`
			} `json:"prompts"`
		} `json:"facts"`
	}
	require.NoError(t, json.Unmarshal(b, &r))
	p := r.Facts[0].Prompts[1]
	out, err := run(t, "attribute", "--checkpoint", fixture, "--prompt", p.Text, "--target", r.Facts[0].Target, "--quadrature", "eleutherai", "--json")
	require.NoError(t, err)
	var got struct {
		Layers []int       `json:"layers"`
		Scores [][]float64 `json:"scores"`
		Diag   []struct {
			CompletenessError float64 `json:"completeness_error"`
		} `json:"layer_diagnostics"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	assert.Equal(t, []int{0, 1}, got.Layers)
	var scale float64
	for _, row := range p.IGPost {
		for _, x := range row {
			scale = max(scale, abs(x))
		}
	}
	for l := range p.IGPost {
		for i := range p.IGPost[l] {
			require.InDelta(t, p.IGPost[l][i], got.Scores[l][i], 1e-5*scale)
		}
	}
	require.Len(t, got.Diag, 2)
	human, err := run(t, "attribute", "--checkpoint", fixture, "--prompt", p.Text, "--target", " Paris", "--top", "5", "--layers", "1")
	require.NoError(t, err)
	assert.Contains(t, human, "completeness error")
	ranked := regexp.MustCompile(`(?m)^\s*\d+\s+1\s+\d+\s+-?\d`).FindAllString(human, -1)
	assert.Len(t, ranked, 5, "five ranked rows of layer 1:\n%s", human)
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// TestKilledRunResumes kills knctl (SIGKILL) in the middle of a dataset
// run and resumes it: nothing finished is lost or duplicated.
func TestKilledRunResumes(t *testing.T) {
	testbin.Build(t, "./internal/testplugins/knctl-model-toy")
	dir := plugins(t)
	knctl := testbin.Build(t, "./cmd/knctl")
	work := t.TempDir()
	facts := filepath.Join(work, "facts.jsonl")
	out := filepath.Join(work, "out.jsonl")
	words := []string{"france", "germany", "spain", "italy", "japan"}
	writeFacts := func(last string) {
		var b strings.Builder
		for _, w := range words {
			fmt.Fprintf(&b, `{"id":%q,"relation":"capital","subject":%q,"target":"city","templates":["the capital of {subject} is","{subject} is governed from","the seat of {subject} is"]}`+"\n", w, w)
		}
		fmt.Fprintf(&b, `{"id":"last","target":"city","prompts":[%q]}`+"\n", last)
		require.NoError(t, os.WriteFile(facts, []byte(b.String()), 0o644))
	}
	runTo := func(out string, extra ...string) *exec.Cmd {
		args := append([]string{"run", "--model", "toy", "--checkpoint", "toy", "--facts", facts, "--out", out,
			"--plugin-dir", dir, "--min-count", "2", "--quadrature", "gauss-legendre", "--steps", "6"}, extra...)
		return exec.Command(knctl, args...)
	}
	knctlCmd := func(extra ...string) *exec.Cmd { return runTo(out, extra...) }
	lines := func() int {
		b, _ := os.ReadFile(out)
		return strings.Count(string(b), "\n")
	}

	writeFacts("this one hangs __hang__")
	cmd := knctlCmd()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	deadline := time.Now().Add(30 * time.Second)
	for lines() < len(words) {
		require.True(t, time.Now().Before(deadline), "run did not finish the first facts: %s", stderr.String())
		time.Sleep(20 * time.Millisecond)
	}
	assert.Contains(t, stderr.String(), "[1/6] fact france", "plain progress lines without a terminal")
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	first, _, err := framework.ReadResults(out)
	require.NoError(t, err)
	require.Len(t, first, len(words))

	// Resume with the hang still there: the fact times out, is reported,
	// the run exits 1, and the file keeps exactly the finished facts.
	cmd = knctlCmd("--resume", "--plugin-timeout", "1s")
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee), "expected a failure exit, got %v", err)
	assert.Equal(t, 1, ee.ExitCode())
	assert.Contains(t, stdout.String(), "5 already in")
	assert.Contains(t, stdout.String(), "failed last")
	assert.Equal(t, len(words), lines())

	// Fixed: resume runs only the missing fact.
	writeFacts("the capital of the world is")
	require.NoError(t, knctlCmd("--resume", "--quiet").Run())
	final, _, err := framework.ReadResults(out)
	require.NoError(t, err)
	require.Len(t, final, len(words)+1)
	assert.Equal(t, first, final[:len(words)], "finished facts untouched")
	assert.Equal(t, "last", final[len(words)].ID)

	// The same as an uninterrupted run.
	clean := filepath.Join(work, "clean.jsonl")
	require.NoError(t, runTo(clean, "--quiet").Run())
	want, _, err := framework.ReadResults(clean)
	require.NoError(t, err)
	for i := range want {
		assert.Equal(t, want[i].Neurons, final[i].Neurons, want[i].ID)
		assert.Equal(t, want[i].Coarse, final[i].Coarse, want[i].ID)
	}
}

// TestRunNoiseGrad runs knctl run with NoiseGrad on the fact-world GPT-2:
// IG's flags reach the base method, sigma 0 reproduces IG exactly, and the
// result carries the fact's answer probability.
func TestRunNoiseGrad(t *testing.T) {
	plugins(t)
	testbin.Build(t, "./plugins/noisegrad/cmd/knctl-attributor-noisegrad")
	args := []string{"run", "--model", "gpt2", "--checkpoint", filepath.Join(worldDir, "gpt2"), "--target", " Crigal",
		"--prompt", "The capital of Galdraia is", "--prompt", "Galdraia's capital is", "--prompt", "The capital city of Galdraia is",
		"--steps", "8", "--quadrature", "gauss-legendre", "--json", "--quiet"}
	igOut, err := run(t, append(args, "--attributor", "ig")...)
	require.NoError(t, err)
	ngOut, err := run(t, append(args, "--attributor", "noisegrad", "--sigma", "0", "--option", "n=2")...)
	require.NoError(t, err)
	ig, ng := decodeResults(t, igOut), decodeResults(t, ngOut)
	require.Len(t, ig, 1)
	require.Len(t, ng, 1)
	assert.NotEmpty(t, ig[0].Neurons)
	assert.Equal(t, ig[0].Neurons, ng[0].Neurons)
	assert.Equal(t, ig[0].Coarse, ng[0].Coarse)
	assert.InDelta(t, ig[0].AnswerProb, ng[0].AnswerProb, 1e-9)
	assert.Greater(t, ng[0].AnswerProb, 0.3)

	_, err = run(t, append(args, "--attributor", "ig", "--sigma", "auto")...)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `unknown option "sigma"`)
}
