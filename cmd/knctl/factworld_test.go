package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/knctl/knctl/internal/testbin"
)

var worldDir = filepath.Join(testbin.Root(), "factworld")

// TestFactWorldIsInSync regenerates the world and compares it with the
// files the repo ships.
func TestFactWorldIsInSync(t *testing.T) {
	dir := t.TempDir()
	_, err := run(t, "factworld", "generate", "--dir", dir)
	require.NoError(t, err)
	for _, f := range []string{"world.json", "facts-gpt2.jsonl", "facts-bert.jsonl"} {
		want, err := os.ReadFile(filepath.Join(worldDir, f))
		require.NoError(t, err)
		got, err := os.ReadFile(filepath.Join(dir, f))
		require.NoError(t, err)
		assert.Equal(t, string(want), string(got), f)
	}
}

// TestTrainerLowersLoss trains a few steps from scratch: the trainer works.
func TestTrainerLowersLoss(t *testing.T) {
	for _, model := range []string{"gpt2", "bert"} {
		t.Run(model, func(t *testing.T) {
			plugins(t)
			testbin.Build(t, "./plugins/models/bert/cmd/knctl-model-bert")
			dir := t.TempDir()
			for _, f := range []string{"world.json", "facts-gpt2.jsonl", "facts-bert.jsonl"} {
				b, err := os.ReadFile(filepath.Join(worldDir, f))
				require.NoError(t, err)
				require.NoError(t, os.WriteFile(filepath.Join(dir, f), b, 0o644))
			}
			_, err := run(t, "factworld", "train", "--model", model, "--dir", dir, "--steps", "60", "--eval-every", "20",
				"--target-prob", "0", "--warmup", "10", "--quiet")
			require.NoError(t, err)
			f, err := os.Open(filepath.Join(dir, model, "train_log.csv"))
			require.NoError(t, err)
			defer f.Close()
			rows, err := csv.NewReader(f).ReadAll()
			require.NoError(t, err)
			// The per-step loss is noisy (random MLM masks, small batches):
			// compare the means of the first and last ten steps.
			require.Greater(t, len(rows), 40)
			mean := func(rows [][]string) float64 {
				s := 0.0
				for _, r := range rows {
					v, err := strconv.ParseFloat(r[1], 64)
					require.NoError(t, err)
					s += v
				}
				return s / float64(len(rows))
			}
			first, last := mean(rows[1:11]), mean(rows[len(rows)-10:])
			assert.Less(t, last, first*0.9, "loss falls: %v -> %v", first, last)
			for _, name := range []string{"config.json", "model.safetensors", "train.json", "train_loss.png"} {
				assert.FileExists(t, filepath.Join(dir, model, name))
			}
		})
	}
}

// TestFactWorldProof measures the committed models: the models know their
// facts and the neurons knctl finds carry them. It fails if the method
// stops working.
func TestFactWorldProof(t *testing.T) {
	plugins(t)
	testbin.Build(t, "./plugins/models/bert/cmd/knctl-model-bert")
	// Gauss-Legendre with 8 nodes reaches the 20-step Riemann sum's accuracy
	// in less time (knctl bench).
	out, err := run(t, "factworld", "eval", "--dir", worldDir, "--model", "gpt2,bert", "--sample", "4", "--others", "3",
		"--quadrature", "gauss-legendre", "--steps", "8", "--json", "--quiet")
	require.NoError(t, err)
	var evals []modelEval
	require.NoError(t, json.Unmarshal([]byte(out), &evals))
	require.Len(t, evals, 2)
	for _, e := range evals {
		t.Run(e.Model, func(t *testing.T) {
			assert.GreaterOrEqual(t, e.SeenAccuracy, 0.95, "seen-template accuracy")
			assert.InDelta(t, 0.6, e.SeenProb, 0.3, "confidence realistic, not saturated")
			assert.Equal(t, 20, e.Facts)
			for _, r := range e.Results {
				assert.True(t, len(r.Neurons) >= 1 && len(r.Neurons) <= 20, "fact %s has %d knowledge neurons", r.ID, len(r.Neurons))
			}
			assert.LessOrEqual(t, e.Suppress.Own.RatioOfMeans, -0.30, "suppression lowers the own answer by >= 30%%")
			assert.Less(t, abs(e.Suppress.Others.RatioOfMeans), 0.05, "other relations move < 5%%")
			assert.Less(t, abs(e.Suppress.RandomOn.RatioOfMeans), 0.05, "random neurons move < 5%%")
			assert.Less(t, abs(e.Amplify.Others.RatioOfMeans), 0.05)
			assert.Greater(t, abs(e.Amplify.Own.RatioOfMeans), 3*abs(e.Amplify.RandomOn.RatioOfMeans), "amplifying the fact's neurons matters, random ones do not")
			if e.Model == "gpt2" {
				assert.Positive(t, e.Amplify.Own.RatioOfMeans, "amplification raises the own answer")
			}
			// The fact-world BERT's answer probability falls when its
			// knowledge neurons are doubled (x1.25 already lowers it): see
			// README, "The fact world".
		})
	}
}

// TestDefaultCheckpointIsFactWorld runs knctl without --checkpoint from the
// repo root: it uses the shipped fact-world model, which knows its fact.
func TestDefaultCheckpointIsFactWorld(t *testing.T) {
	dir := plugins(t)
	knctl := testbin.Build(t, "./cmd/knctl")
	b, err := os.ReadFile(filepath.Join(worldDir, "facts-gpt2.jsonl"))
	require.NoError(t, err)
	var f struct {
		Prompts []string `json:"prompts"`
		Target  string   `json:"target"`
	}
	require.NoError(t, json.NewDecoder(bytes.NewReader(b)).Decode(&f))
	cmd := exec.Command(knctl, "predict", "--prompt", f.Prompts[0], "--target", f.Target, "--json", "--plugin-dir", dir)
	cmd.Dir = testbin.Root()
	out, err := cmd.Output()
	require.NoError(t, err)
	var p struct {
		TargetRank int     `json:"target_rank"`
		TargetProb float64 `json:"target_prob"`
	}
	require.NoError(t, json.Unmarshal(out, &p))
	assert.Zero(t, p.TargetRank, "the default model knows %q -> %q", f.Prompts[0], f.Target)
}

// TestFactWorldEditing updates facts of the fact-world GPT-2 through their
// knowledge neurons: most change to the new answer while other relations
// keep their accuracy, and the same update through random neurons of the
// same layers does not change them.
func TestFactWorldEditing(t *testing.T) {
	plugins(t)
	neurons := filepath.Join(t.TempDir(), "kn.jsonl")
	facts := filepath.Join(worldDir, "facts-gpt2.jsonl")
	_, err := run(t, "run", "--model", "gpt2", "--checkpoint", filepath.Join(worldDir, "gpt2"), "--facts", facts, "--sample", "2",
		"--quadrature", "gauss-legendre", "--steps", "8", "--out", neurons, "--quiet")
	require.NoError(t, err)
	// λ2 = 8, the original code's setting for BERT-base, overshoots on this
	// small model (other relations lose ~20 points); 2 is enough here.
	out, err := run(t, "eval", "--model", "gpt2", "--checkpoint", filepath.Join(worldDir, "gpt2"), "--facts", facts, "--neurons", neurons,
		"--l2", "2", "--erase-top", "0", "--others", "2", "--probe", "3", "--json")
	require.NoError(t, err)
	var rep evalReport
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.Equal(t, 10, rep.Update.Facts)
	assert.GreaterOrEqual(t, rep.Update.SuccessRate, 0.6, "most updated facts give the new answer")
	assert.Less(t, rep.UpdateRandom.SuccessRate, 0.2, "random neurons do not")
	assert.Less(t, abs(rep.Update.AccuracyOtherDelta), 0.1, "other relations keep their accuracy within a few points")
	assert.Greater(t, rep.Update.MRRAfter, rep.Update.MRRBefore+0.5)
	assert.Positive(t, rep.Update.NeighborPrompts)
	assert.LessOrEqual(t, rep.Suppress.Own.RatioOfMeans, -0.3)
	assert.Less(t, abs(rep.Suppress.RandomOn.RatioOfMeans), 0.05)
}
