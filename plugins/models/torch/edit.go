package torch

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/sugarme/gotch/ts"

	"github.com/knctl/knctl/internal/atomicfile"
	"github.com/knctl/knctl/plugins/models/checkpoint"
	"github.com/knctl/knctl/sdk"
)

// Rows reads rows idx of a 2-D weight w. what names an index in errors.
func Rows(w *ts.Tensor, idx []int, what string) ([][]float32, error) {
	s := NewScope()
	defer s.Close()
	sz := s.Shape(w)
	if sz == nil {
		return nil, s.Err()
	}
	if err := checkIndex(idx, int(sz[0]), what); err != nil {
		return nil, err
	}
	if len(idx) == 0 {
		return [][]float32{}, nil
	}
	ix := make([]int64, len(idx))
	for i, v := range idx {
		ix[i] = int64(v)
	}
	flat := s.Float32s(s.IndexSelect(w, 0, s.FromInt64(ix, int64(len(ix)))))
	if err := s.Err(); err != nil {
		return nil, err
	}
	cols := int(sz[1])
	out := make([][]float32, len(idx))
	for i := range out {
		out[i] = flat[i*cols : (i+1)*cols : (i+1)*cols]
	}
	return out, nil
}

// WithRows returns a copy of the 2-D weight w with rows idx set to values.
// The caller owns the result.
func WithRows(w *ts.Tensor, idx []int, values [][]float32, what string) (*ts.Tensor, error) {
	s := NewScope()
	defer s.Close()
	sz := s.Shape(w)
	if sz == nil {
		return nil, s.Err()
	}
	if err := checkIndex(idx, int(sz[0]), what); err != nil {
		return nil, err
	}
	if len(idx) == 0 {
		return nil, sdk.InvalidInputf("value slots: no %ss given", what)
	}
	if len(values) != len(idx) {
		return nil, sdk.InvalidInputf("value slots: %d vectors for %d %ss", len(values), len(idx), what)
	}
	seen := map[int]bool{}
	flat := make([]float32, 0, len(idx)*int(sz[1]))
	ix := make([]int64, len(idx))
	for i, v := range values {
		if len(v) != int(sz[1]) {
			return nil, sdk.InvalidInputf("value slot for %s %d: %d values; expected %d (the hidden size)", what, idx[i], len(v), sz[1])
		}
		if seen[idx[i]] {
			return nil, sdk.InvalidInputf("value slots: %s %d given twice", what, idx[i])
		}
		seen[idx[i]] = true
		flat = append(flat, v...)
		ix[i] = int64(idx[i])
	}
	t := s.IndexCopy(w, 0, s.FromInt64(ix, int64(len(ix))), s.FromFloat32(flat, int64(len(idx)), sz[1]))
	if err := s.Err(); err != nil {
		return nil, err
	}
	return s.Keep(t), nil
}

func checkIndex(idx []int, n int, what string) error {
	for _, i := range idx {
		if i < 0 || i >= n {
			return sdk.InvalidInputf("%s %d: out of range; expected 0..%d", what, i, n-1)
		}
	}
	return nil
}

// NoiseSelector validates spec and returns which parameters get noise: all,
// or those ffn selects.
func NoiseSelector(spec sdk.NoiseSpec, ffn func(name string) bool) (func(string) bool, error) {
	if spec.Sigma < 0 {
		return nil, sdk.InvalidInputf("noise sigma %g: expected >= 0", spec.Sigma)
	}
	switch spec.Mode {
	case "", sdk.NoiseMultiplicative, sdk.NoiseAdditive:
	default:
		return nil, sdk.InvalidInputf("noise mode %q: expected %q or %q", spec.Mode, sdk.NoiseMultiplicative, sdk.NoiseAdditive)
	}
	switch spec.Scope {
	case "", sdk.ScopeAll:
		return func(string) bool { return true }, nil
	case sdk.ScopeFFN:
		return ffn, nil
	}
	return nil, sdk.InvalidInputf("noise scope %q: expected %q or %q", spec.Scope, sdk.ScopeAll, sdk.ScopeFFN)
}

// SaveCheckpoint writes st's parameters (named by hfNames) to
// dir/model.safetensors and copies the listed files that exist in srcDir
// (config and tokenizer). Each file is written atomically.
func SaveCheckpoint(dir, srcDir string, st *Store, hfNames map[string]string, files []string) error {
	if dir == "" {
		return sdk.InvalidInputf("save: empty directory; expected where to write the checkpoint")
	}
	if abs, _ := filepath.Abs(dir); abs != "" {
		if src, _ := filepath.Abs(srcDir); src == abs {
			return sdk.InvalidInputf("save %s: is the checkpoint the model was loaded from; choose another directory", dir)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return sdk.InvalidInputf("save: create %s: %w", dir, err)
	}
	var tensors []checkpoint.WriteTensor
	s := NewScope()
	defer s.Close()
	for _, name := range st.Names() {
		t := st.Get(name)
		vals := s.Float32s(t)
		shape := s.Shape(t)
		if err := s.Err(); err != nil {
			return fmt.Errorf("save %s: read %s: %w", dir, name, err)
		}
		tensors = append(tensors, checkpoint.WriteTensor{Name: hfNames[name], Shape: shape, Data: f32le(vals)})
	}
	for _, f := range files {
		src := filepath.Join(srcDir, f)
		if _, err := os.Stat(src); err != nil {
			continue
		}
		if err := copyFile(src, filepath.Join(dir, f)); err != nil {
			return fmt.Errorf("save %s: %w", dir, err)
		}
	}
	return checkpoint.WriteSafetensors(filepath.Join(dir, "model.safetensors"), tensors, map[string]string{"format": "pt"})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer in.Close()
	return atomicfile.Write(dst, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}

func f32le(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		u := math.Float32bits(x)
		b[4*i] = byte(u)
		b[4*i+1] = byte(u >> 8)
		b[4*i+2] = byte(u >> 16)
		b[4*i+3] = byte(u >> 24)
	}
	return b
}
