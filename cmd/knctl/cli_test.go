package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/knctl/knctl/internal/testbin"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

var fixture = filepath.Join(testbin.Root(), "testdata", "gpt2-tiny")

// plugins builds the real plugins into one directory.
func plugins(t *testing.T) string {
	testbin.Build(t, "./plugins/models/gpt2/cmd/knctl-model-gpt2")
	testbin.Build(t, "./plugins/ig/cmd/knctl-attributor-ig")
	return testbin.Dir()
}

// run executes knctl in process and returns stdout.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	a := newApp()
	var out, errOut bytes.Buffer
	a.out, a.errOut = &out, &errOut
	a.root.SetOut(&out)
	a.root.SetErr(&errOut)
	a.root.SetArgs(append(args, "--plugin-dir", plugins(t)))
	err := a.root.ExecuteContext(context.Background())
	return out.String(), err
}

type refPrompt struct {
	Text     string      `json:"text"`
	InputIDs []int       `json:"input_ids"`
	Tokens   []string    `json:"tokens"`
	TargetP  float64     `json:"target_prob"`
	FFNPre   [][]float64 `json:"ffn_pre"`
	FFNPost  [][]float64 `json:"ffn_post"`
	Top10    []struct {
		ID int `json:"id"`
	} `json:"top10"`
}

func reference(t *testing.T) (target string, targetID int, p refPrompt) {
	b, err := os.ReadFile(filepath.Join(fixture, "reference.json"))
	require.NoError(t, err)
	var r struct {
		Facts []struct {
			Target   string      `json:"target"`
			TargetID int         `json:"target_id"`
			Prompts  []refPrompt `json:"prompts"`
		} `json:"facts"`
	}
	require.NoError(t, json.Unmarshal(b, &r))
	f := r.Facts[0]
	return f.Target, f.TargetID, f.Prompts[0]
}

func TestPredictJSON(t *testing.T) {
	target, targetID, p := reference(t)
	out, err := run(t, "predict", "--model", "gpt2", "--checkpoint", fixture, "--prompt", p.Text, "--target", target, "--top", "10", "--json")
	require.NoError(t, err)
	var got struct {
		Tokens     []string `json:"tokens"`
		InputIDs   []int    `json:"input_ids"`
		TargetIDs  []int    `json:"target_ids"`
		TargetProb float64  `json:"target_prob"`
		Top        []struct {
			Token string  `json:"token"`
			ID    int     `json:"id"`
			Prob  float64 `json:"prob"`
		} `json:"top"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	assert.Equal(t, p.Tokens, got.Tokens)
	assert.Equal(t, p.InputIDs, got.InputIDs)
	assert.Equal(t, []int{targetID}, got.TargetIDs)
	assert.InEpsilon(t, p.TargetP, got.TargetProb, 1e-4)
	require.Len(t, got.Top, 10)
	for i, want := range p.Top10 {
		assert.Equal(t, want.ID, got.Top[i].ID)
	}

	// Without a target there is no target_prob.
	out, err = run(t, "predict", "--checkpoint", fixture, "--prompt", p.Text, "--json")
	require.NoError(t, err)
	assert.NotContains(t, out, "target_prob")

	human, err := run(t, "predict", "--checkpoint", fixture, "--prompt", p.Text, "--target", target)
	require.NoError(t, err)
	assert.Contains(t, human, `" Paris"`)
	assert.Contains(t, human, "top 10")
}

func TestActivationsJSON(t *testing.T) {
	_, _, p := reference(t)
	for hook, want := range map[string][][]float64{"pre": p.FFNPre, "post": p.FFNPost} {
		out, err := run(t, "activations", "--checkpoint", fixture, "--prompt", p.Text, "--hook", hook, "--json")
		require.NoError(t, err)
		var got struct {
			Hook   string      `json:"hook"`
			Layers [][]float64 `json:"layers"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &got))
		assert.Equal(t, hook, got.Hook)
		require.Len(t, got.Layers, len(want))
		for l := range want {
			require.Len(t, got.Layers[l], len(want[l]))
			for i := range want[l] {
				require.InDelta(t, want[l][i], got.Layers[l][i], 1e-4)
			}
		}
	}
	out, err := run(t, "activations", "--checkpoint", fixture, "--prompt", p.Text, "--layers", "1", "--json")
	require.NoError(t, err)
	assert.Contains(t, out, `"layer_ids": [`)
}

func TestPluginsAndVersion(t *testing.T) {
	out, err := run(t, "plugins", "--json")
	require.NoError(t, err)
	var got struct {
		Plugins []struct {
			Kind string `json:"kind"`
			Name string `json:"name"`
			Info *struct {
				Options []struct{ Name string } `json:"options"`
			} `json:"info"`
		} `json:"plugins"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	names := map[string]bool{}
	for _, p := range got.Plugins {
		names[p.Kind+"/"+p.Name] = true
		if p.Name == "ig" {
			require.NotNil(t, p.Info)
			assert.NotEmpty(t, p.Info.Options)
		}
	}
	assert.True(t, names["model/gpt2"])
	assert.True(t, names["attributor/ig"])

	out, err = run(t, "version", "--json")
	require.NoError(t, err)
	assert.Contains(t, out, `"plugin_protocol": 1`)
}

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "knctl.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("checkpoint: "+fixture+"\ntop: 3\nprompt: The capital of France is\n"), 0o644))
	count := func(out string) int {
		var got struct {
			Top []any `json:"top"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &got))
		return len(got.Top)
	}
	out, err := run(t, "predict", "--config", cfg, "--json")
	require.NoError(t, err)
	assert.Equal(t, 3, count(out), "config file")
	t.Setenv("KNCTL_TOP", "4")
	out, err = run(t, "predict", "--config", cfg, "--json")
	require.NoError(t, err)
	assert.Equal(t, 4, count(out), "environment beats config")
	out, err = run(t, "predict", "--config", cfg, "--json", "--top", "5")
	require.NoError(t, err)
	assert.Equal(t, 5, count(out), "flag beats environment")

	bad := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("chekpoint: x\n"), 0o644))
	_, err = run(t, "predict", "--config", bad, "--prompt", "x")
	require.Error(t, err)
	assert.ErrorIs(t, err, errUsage)
	assert.Contains(t, err.Error(), "chekpoint")

	broken := filepath.Join(dir, "broken.yaml")
	require.NoError(t, os.WriteFile(broken, []byte("top: [\n"), 0o644))
	_, err = run(t, "predict", "--config", broken, "--prompt", "x")
	assert.ErrorIs(t, err, errUsage)
}

func TestParseLayers(t *testing.T) {
	got, err := parseLayers("0, 2,5-7")
	require.NoError(t, err)
	assert.Equal(t, []int{0, 2, 5, 6, 7}, got)
	for _, bad := range []string{"a", "3-1", "1.5", "2-"} {
		_, err := parseLayers(bad)
		assert.Error(t, err, bad)
	}
}

// TestExitCodes runs the knctl binary: bad input exits 2 with a message
// naming the input and leaves stdout empty.
func TestExitCodes(t *testing.T) {
	dir := plugins(t)
	knctl := testbin.Build(t, "./cmd/knctl")
	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"unknown model", []string{"predict", "--model", "llama", "--prompt", "x"}, 2, `unknown model plugin "llama" (installed: gpt2`},
		{"missing checkpoint", []string{"predict", "--checkpoint", filepath.Join(dir, "nope"), "--prompt", "x"}, 2, "nope"},
		{"empty prompt", []string{"predict", "--checkpoint", fixture}, 2, "--prompt"},
		{"prompt too long", []string{"predict", "--checkpoint", fixture, "--prompt", strings.Repeat("word ", 70)}, 2, "n_positions=64"},
		{"bad hook", []string{"activations", "--checkpoint", fixture, "--prompt", "x", "--hook", "mid"}, 2, "hook"},
		{"layer out of range", []string{"activations", "--checkpoint", fixture, "--prompt", "x", "--layers", "7"}, 2, "layer 7"},
		{"wrong model type", []string{"predict", "--checkpoint", filepath.Join(testbin.Root(), "testdata", "bert-tiny"), "--prompt", "x"}, 2, `model_type "bert"`},
		{"ok", []string{"predict", "--checkpoint", fixture, "--prompt", "x", "--json"}, 0, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(knctl, c.args...)
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
