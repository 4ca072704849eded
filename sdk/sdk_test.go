package sdk

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestInvalidInputSurvivesStatus(t *testing.T) {
	base := InvalidInputf("layer %d: out of range", 9)
	wrapped := fmt.Errorf("ig: %w", base)
	got := fromStatus(toStatus(wrapped))
	assert.ErrorIs(t, got, ErrInvalidInput)
	assert.Equal(t, "ig: layer 9: out of range", got.Error())

	other := fromStatus(toStatus(errors.New("libtorch exploded")))
	assert.NotErrorIs(t, other, ErrInvalidInput)
	assert.Equal(t, "libtorch exploded", other.Error())

	assert.ErrorIs(t, fromStatus(toStatus(context.Canceled)), context.Canceled)
	assert.ErrorIs(t, fromStatus(toStatus(fmt.Errorf("x: %w", ErrPluginUnavailable))), ErrPluginUnavailable)
	assert.Nil(t, fromStatus(toStatus(nil)))
}

func TestFloatWire(t *testing.T) {
	v := []float32{0, -1.5, 3.25e-8, 1e30}
	got, err := bytesF32(f32Bytes(v), 4, "x")
	require.NoError(t, err)
	assert.Equal(t, v, got)
	_, err = bytesF32(f32Bytes(v), 3, "x")
	assert.ErrorContains(t, err, "expected 3 float32 values")

	m, err := matrixToPB([][]float32{{1, 2}, {3, 4}, {5, 6}})
	require.NoError(t, err)
	rows, err := matrixFromPB(m, "m")
	require.NoError(t, err)
	assert.Equal(t, [][]float32{{1, 2}, {3, 4}, {5, 6}}, rows)
	_, err = matrixToPB([][]float32{{1, 2}, {3}})
	assert.ErrorIs(t, err, ErrInvalidInput)
	m.Rows = 4
	_, err = matrixFromPB(m, "m")
	assert.ErrorIs(t, err, ErrInvalidInput)
}

func TestOptions(t *testing.T) {
	o := Options{Values: map[string]string{"steps": "12", "sigma": "0.5", "on": "true", "name": "x", "bad": "zz"}}
	n, err := o.Int("steps", 20)
	require.NoError(t, err)
	assert.Equal(t, 12, n)
	n, err = o.Int("missing", 20)
	require.NoError(t, err)
	assert.Equal(t, 20, n)
	f, err := o.Float("sigma", 0)
	require.NoError(t, err)
	assert.Equal(t, 0.5, f)
	b, err := o.Bool("on", false)
	require.NoError(t, err)
	assert.True(t, b)
	assert.Equal(t, "x", o.String("name", "y"))
	_, err = o.Int("bad", 0)
	assert.ErrorIs(t, err, ErrInvalidInput)
	_, err = o.Float("bad", 0)
	assert.ErrorContains(t, err, "bad")
	err = o.CheckKnown("m", []OptionSpec{{Name: "steps"}})
	assert.ErrorIs(t, err, ErrInvalidInput)
}

func TestParseHook(t *testing.T) {
	h, err := ParseHook("")
	require.NoError(t, err)
	assert.Equal(t, HookPost, h)
	h, err = ParseHook("pre")
	require.NoError(t, err)
	assert.Equal(t, HookPre, h)
	_, err = ParseHook("mid")
	assert.ErrorIs(t, err, ErrInvalidInput)
}

func TestPluginEnvMakesOpenMPPassive(t *testing.T) {
	env := []string{"PATH=/bin"}
	got := pluginEnv(env)
	assert.Equal(t, []string{"PATH=/bin", "OMP_WAIT_POLICY=PASSIVE"}, got)
	assert.Equal(t, []string{"PATH=/bin"}, env, "the host's environment is not changed")
	mine := []string{"OMP_WAIT_POLICY=ACTIVE", "PATH=/bin"}
	assert.Equal(t, mine, pluginEnv(mine), "the user's choice wins")
}
