package framework

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/knctl/knctl/internal/testbin"
	"github.com/knctl/knctl/sdk"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

// pluginDir builds the toy model and ig plugins into one directory.
func pluginDir(t *testing.T) string {
	testbin.Build(t, "./internal/testplugins/knctl-model-toy")
	testbin.Build(t, "./plugins/ig/cmd/knctl-attributor-ig")
	return testbin.Dir()
}

func TestDiscover(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	touch := func(dir, name string, mode os.FileMode) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), mode))
	}
	touch(a, "knctl-model-gpt2", 0o755)
	touch(a, "knctl-attributor-ig", 0o755)
	touch(a, "knctl-model-notexec", 0o644)
	touch(a, "README", 0o755)
	touch(b, "knctl-model-gpt2", 0o755) // shadowed by a's
	touch(b, "knctl-model-bert", 0o755)
	got := Discover([]string{a, b, filepath.Join(a, "missing")})
	assert.Equal(t, []Plugin{
		{Kind: sdk.KindModel, Name: "bert", Path: filepath.Join(b, "knctl-model-bert")},
		{Kind: sdk.KindModel, Name: "gpt2", Path: filepath.Join(a, "knctl-model-gpt2")},
		{Kind: sdk.KindAttributor, Name: "ig", Path: filepath.Join(a, "knctl-attributor-ig")},
	}, got)

	_, err := Find([]string{a, b}, sdk.KindModel, "llama")
	require.Error(t, err)
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
	assert.Contains(t, err.Error(), `unknown model plugin "llama"`)
	assert.Contains(t, err.Error(), "installed: bert, gpt2")
	p, err := Find([]string{a, b}, sdk.KindAttributor, "ig")
	require.NoError(t, err)
	assert.Equal(t, "attributor plugin ig", p.String())
}

func TestSearchPathOrder(t *testing.T) {
	t.Setenv("KNCTL_PLUGIN_DIR", "/env/one"+string(os.PathListSeparator)+"/env/two")
	t.Setenv("HOME", "/home/someone")
	dirs := SearchPath("/flag")
	require.GreaterOrEqual(t, len(dirs), 5)
	assert.Equal(t, []string{"/flag", "/env/one", "/env/two"}, dirs[:3])
	assert.Equal(t, "/home/someone/.knctl/plugins", dirs[len(dirs)-1])
}

func TestHostRunsAttributorOnModel(t *testing.T) {
	ctx := context.Background()
	h := NewHost([]string{pluginDir(t)})
	defer h.Close()
	m, err := h.OpenModel(ctx, "toy", "toy", nil)
	require.NoError(t, err)
	assert.Equal(t, "toy", m.ModelInfo.Architecture)
	a, err := h.OpenAttributor(ctx, "ig")
	require.NoError(t, err)
	res, err := a.Attribute(ctx, m, sdk.AttributionQuery{Query: sdk.Query{Prompt: "the capital of france is", Answer: "paris"}}, sdk.Options{
		Values: map[string]string{"steps": "16", "quadrature": "gauss-legendre"},
		Peers:  h.NewPeers(m),
	})
	require.NoError(t, err)
	require.Len(t, res.Scores, 3)
	for _, d := range res.LayerDiagnostics {
		assert.Less(t, abs(d.CompletenessError), 1e-6*(d.ProbFull+d.ProbBaseline), "layer %d", d.Layer)
	}
	// Peers run another attributor on the same model.
	peer, err := h.NewPeers(m).Attribute(ctx, "ig", sdk.AttributionQuery{Query: sdk.Query{Prompt: "the capital of france is", Answer: "paris"}}, map[string]string{"steps": "16", "quadrature": "gauss-legendre"})
	require.NoError(t, err)
	assert.Equal(t, res.Scores, peer.Scores)

	_, err = h.OpenModel(ctx, "toy", "not-a-toy", nil)
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
	assert.Contains(t, err.Error(), "not-a-toy")
	_, err = h.OpenAttributor(ctx, "nope")
	assert.ErrorContains(t, err, "installed: ig")
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func TestCrashedPluginIsReported(t *testing.T) {
	ctx := context.Background()
	h := NewHost([]string{pluginDir(t)})
	defer h.Close()
	m, err := h.OpenModel(ctx, "toy", "toy", nil)
	require.NoError(t, err)
	_, err = m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: "boom __crash__"}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "model plugin toy")
	assert.Contains(t, err.Error(), "died")
	assert.ErrorIs(t, err, sdk.ErrPluginUnavailable)
	assert.True(t, m.Proc.Exited())

	// Killed mid-request through an attributor: the host gets an error,
	// not a hang, and it names the model plugin.
	m2, err := h.OpenModel(ctx, "toy", "toy", nil)
	require.NoError(t, err)
	a, err := h.OpenAttributor(ctx, "ig")
	require.NoError(t, err)
	_, err = a.Attribute(ctx, m2, sdk.AttributionQuery{Query: sdk.Query{Prompt: "x __crash__", Answer: "y"}}, sdk.Options{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "model plugin toy")
	// The attributor survives its model's death.
	m3, err := h.OpenModel(ctx, "toy", "toy", nil)
	require.NoError(t, err)
	_, err = a.Attribute(ctx, m3, sdk.AttributionQuery{Query: sdk.Query{Prompt: "fine", Answer: "y"}}, sdk.Options{})
	require.NoError(t, err)
}

func TestKilledPluginMidRequest(t *testing.T) {
	ctx := context.Background()
	h := NewHost([]string{pluginDir(t)})
	defer h.Close()
	m, err := h.OpenModel(ctx, "toy", "toy", nil)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		_, err := m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: "wait __hang__"}})
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	require.NoError(t, m.Proc.Kill())
	select {
	case err := <-done:
		require.Error(t, err)
		assert.Contains(t, err.Error(), "model plugin toy")
		assert.ErrorIs(t, err, sdk.ErrPluginUnavailable)
	case <-time.After(10 * time.Second):
		t.Fatal("request to a killed plugin hung")
	}
}

func TestHungPluginTimesOut(t *testing.T) {
	ctx := context.Background()
	h := NewHost([]string{pluginDir(t)})
	h.CallTimeout = 500 * time.Millisecond
	defer h.Close()
	m, err := h.OpenModel(ctx, "toy", "toy", nil)
	require.NoError(t, err)
	start := time.Now()
	_, err = m.Predict(ctx, sdk.PredictRequest{Query: sdk.Query{Prompt: "wait __hang__"}})
	require.Error(t, err)
	assert.Less(t, time.Since(start), 5*time.Second)
	assert.Contains(t, err.Error(), "model plugin toy")
	assert.Contains(t, err.Error(), "no progress within 500ms")
}

// TestSlowAttributionIsNotHung runs an attribution that takes longer than
// the call timeout while it keeps calling the model: it is progress, not a
// hang.
func TestSlowAttributionIsNotHung(t *testing.T) {
	ctx := context.Background()
	h := NewHost([]string{pluginDir(t)})
	h.CallTimeout = 500 * time.Millisecond
	defer h.Close()
	m, err := h.OpenModel(ctx, "toy", "toy", nil)
	require.NoError(t, err)
	a, err := h.OpenAttributor(ctx, "ig")
	require.NoError(t, err)
	start := time.Now()
	qs := []sdk.AttributionQuery{{Query: sdk.Query{Prompt: "a b __slow__", Answer: "c"}}, {Query: sdk.Query{Prompt: "b __slow__", Answer: "c"}}}
	res, err := sdk.AttributeFact(ctx, a, m, qs, sdk.Options{Values: map[string]string{"steps": "4"}})
	require.NoError(t, err)
	require.Len(t, res, 2)
	assert.Greater(t, time.Since(start), time.Second, "the attribution should outlast the timeout for this test to mean anything")
}

// TestNoOrphansWhenHostDies kills a host process with SIGKILL and checks
// its plugin exits on its own.
func TestNoOrphansWhenHostDies(t *testing.T) {
	if os.Getenv("KNCTL_TEST_HOST") == "1" {
		h := NewHost([]string{os.Getenv("KNCTL_TEST_DIR")})
		if _, err := h.OpenModel(context.Background(), "toy", "toy", nil); err != nil {
			os.Exit(3)
		}
		os.Stdout.WriteString("ready\n")
		select {}
	}
	dir := pluginDir(t)
	cmd := exec.Command(os.Args[0], "-test.run=TestNoOrphansWhenHostDies")
	cmd.Env = append(os.Environ(), "KNCTL_TEST_HOST=1", "KNCTL_TEST_DIR="+dir)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	buf := make([]byte, 6)
	_, err = out.Read(buf)
	require.NoError(t, err)
	require.Equal(t, "ready\n", string(buf))
	children := childPIDs(t, cmd.Process.Pid)
	require.NotEmpty(t, children, "the host started a plugin")
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range children {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("plugin process %d outlived its host", pid)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func childPIDs(t *testing.T, parent int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skip("no /proc")
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the command name (which is in parentheses).
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(parent) {
			out = append(out, pid)
		}
	}
	return out
}

func alive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// TestNoiseGradThroughPlugins runs NoiseGrad as a plugin whose base method
// (ig, another plugin) the host runs on the same model plugin.
func TestNoiseGradThroughPlugins(t *testing.T) {
	ctx := context.Background()
	testbin.Build(t, "./plugins/noisegrad/cmd/knctl-attributor-noisegrad")
	h := NewHost([]string{pluginDir(t)})
	defer h.Close()
	m, err := h.OpenModel(ctx, "toy", "toy", nil)
	require.NoError(t, err)
	ng, err := h.OpenAttributor(ctx, "noisegrad")
	require.NoError(t, err)
	igA, err := h.OpenAttributor(ctx, "ig")
	require.NoError(t, err)
	q := sdk.AttributionQuery{Query: sdk.Query{Prompt: "the capital of france is", Answer: "paris"}}
	base, err := igA.Attribute(ctx, m, q, sdk.Options{Values: map[string]string{"steps": "6"}})
	require.NoError(t, err)
	peers := h.NewPeers(m)
	res, err := ng.Attribute(ctx, m, q, sdk.Options{Values: map[string]string{"sigma": "0", "n": "2", "base.steps": "6"}, Peers: peers})
	require.NoError(t, err)
	assert.Equal(t, base.Scores, res.Scores)
	noisy, err := ng.Attribute(ctx, m, q, sdk.Options{Values: map[string]string{"sigma": "0.1", "n": "2", "base.steps": "6"}, Peers: peers})
	require.NoError(t, err)
	assert.NotEqual(t, base.Scores, noisy.Scores)
	after, err := igA.Attribute(ctx, m, q, sdk.Options{Values: map[string]string{"steps": "6"}})
	require.NoError(t, err)
	assert.Equal(t, base.Scores, after.Scores, "the model plugin's weights are restored")
}
