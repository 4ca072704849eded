package checkpoint

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/knctl/knctl/sdk"
)

func f32(v ...float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func TestSafetensorsRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "model.safetensors")
	require.NoError(t, WriteSafetensors(path, []WriteTensor{
		{Name: "b", Shape: []int64{3}, Data: f32(1, 2, 3)},
		{Name: "a", Shape: []int64{2, 2}, Data: f32(-1, 0.5, 7, 8)},
	}, map[string]string{"format": "pt"}))
	st, err := OpenSafetensors(path)
	require.NoError(t, err)
	defer st.Close()
	assert.Equal(t, []string{"a", "b"}, st.Names())
	data, info, err := st.Float32("a")
	require.NoError(t, err)
	assert.Equal(t, []int64{2, 2}, info.Shape)
	assert.Equal(t, f32(-1, 0.5, 7, 8), data)
	_, _, err = st.Float32("missing")
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
}

func TestSafetensorsFixtureReads(t *testing.T) {
	st, err := OpenSafetensors("../../../testdata/gpt2-tiny/model.safetensors")
	require.NoError(t, err)
	defer st.Close()
	info, ok := st.Info("transformer.h.0.mlp.c_fc.weight")
	require.True(t, ok)
	// Conv1D keeps weights as [in, out]: n_embd 64 -> FFN 256.
	assert.Equal(t, []int64{64, 256}, info.Shape)
	_, ok = st.Info("lm_head.weight")
	assert.False(t, ok, "safetensors omits the tied lm_head")
}

func TestSafetensorsHalfPrecision(t *testing.T) {
	// 1.0, -2.0 and 0.5 in IEEE half (F16) and bfloat16 (BF16).
	assert.Equal(t, float32(1), halfToFloat(0x3c00))
	assert.Equal(t, float32(-2), halfToFloat(0xc000))
	assert.Equal(t, float32(0.5), halfToFloat(0x3800))
	assert.Equal(t, float32(math.Pow(2, -24)), halfToFloat(0x0001))
}

func TestSafetensorsCorrupt(t *testing.T) {
	good, err := os.ReadFile("../../../testdata/gpt2-tiny/model.safetensors")
	require.NoError(t, err)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, b, 0o644))
		return p
	}
	cases := map[string]struct {
		path string
		msg  string
	}{
		"truncated":  {write("trunc.safetensors", good[:len(good)/2]), "truncated"},
		"tiny":       {write("tiny.safetensors", good[:5]), "too short"},
		"bad length": {write("len.safetensors", append([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, good[8:]...)), "header length"},
		"not json":   {write("json.safetensors", append(append([]byte{}, good[:8]...), make([]byte, len(good)-8)...)), "not a JSON object"},
		"missing":    {filepath.Join(dir, "nope.safetensors"), "nope.safetensors"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := OpenSafetensors(c.path)
			require.Error(t, err)
			assert.ErrorIs(t, err, sdk.ErrInvalidInput)
			assert.Contains(t, err.Error(), c.msg)
			assert.Contains(t, err.Error(), c.path)
		})
	}
}

func TestResolve(t *testing.T) {
	_, err := Resolve("")
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)

	dir, err := Resolve("../../../testdata/gpt2-tiny")
	require.NoError(t, err)
	assert.Equal(t, "../../../testdata/gpt2-tiny", dir)

	_, err = Resolve("../../../testdata")
	assert.ErrorContains(t, err, "no config.json")

	// A fake HuggingFace cache, as huggingface_hub lays it out.
	home := t.TempDir()
	t.Setenv("HF_HUB_CACHE", "")
	t.Setenv("HF_HOME", home)
	snap := filepath.Join(home, "hub", "models--openai-community--gpt2", "snapshots", "abc123")
	require.NoError(t, os.MkdirAll(snap, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(snap, "config.json"), []byte(`{"model_type":"gpt2"}`), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(home, "hub", "models--openai-community--gpt2", "refs"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(home, "hub", "models--openai-community--gpt2", "refs", "main"), []byte("abc123\n"), 0o644))
	dir, err = Resolve("openai-community/gpt2")
	require.NoError(t, err)
	assert.Equal(t, snap, dir)

	_, err = Resolve("nobody/nothing")
	require.Error(t, err)
	assert.ErrorIs(t, err, sdk.ErrInvalidInput)
	assert.Contains(t, err.Error(), "models--nobody--nothing")
}
