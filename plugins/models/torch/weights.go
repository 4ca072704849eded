package torch

import (
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/pickle"
	"github.com/sugarme/gotch/ts"

	"github.com/knctl/knctl/plugins/models/checkpoint"
	"github.com/knctl/knctl/sdk"
)

// LoadTensors reads every floating-point tensor of a weights file
// (model.safetensors or a PyTorch pickle such as pytorch_model.bin) as
// float32. The caller owns the returned tensors.
func LoadTensors(path string, safetensors bool) (map[string]*ts.Tensor, error) {
	if safetensors {
		return loadSafetensors(path)
	}
	return loadPickle(path)
}

func loadSafetensors(path string) (out map[string]*ts.Tensor, err error) {
	st, err := checkpoint.OpenSafetensors(path)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	out = make(map[string]*ts.Tensor)
	defer func() {
		if err != nil {
			DropAll(out)
		}
	}()
	for _, name := range st.Names() {
		info, _ := st.Info(name)
		if !isFloat(info.DType) {
			continue // e.g. position_ids buffers
		}
		data, info, err := st.Float32(name)
		if err != nil {
			return nil, err
		}
		t, err := ts.OfDataSize(data, info.Shape, gotch.Float)
		if err != nil {
			return nil, fmt.Errorf("load tensor %s from %s: %w", name, path, err)
		}
		out[name] = t
	}
	return out, nil
}

func isFloat(dtype string) bool {
	switch dtype {
	case "F32", "F16", "BF16", "F64":
		return true
	}
	return false
}

func loadPickle(path string) (map[string]*ts.Tensor, error) {
	raw, err := decodePickle(path)
	if err != nil {
		return nil, sdk.InvalidInputf("read PyTorch weights %s: %v", path, err)
	}
	out := make(map[string]*ts.Tensor, len(raw))
	for name, t := range raw {
		if t == nil {
			continue
		}
		switch t.DType() {
		case gotch.Float:
			out[name] = t
		case gotch.Double, gotch.Half:
			f, err := t.Totype(gotch.Float, true)
			if err != nil {
				DropAll(out)
				return nil, fmt.Errorf("convert %s in %s to float32: %w", name, path, err)
			}
			out[name] = f
		default:
			_ = t.Drop() // integer buffers such as position_ids
		}
	}
	return out, nil
}

// decodePickle reads a torch.save'd state dict (an OrderedDict or, as
// recent transformers versions write, a plain dict) with gotch's unpickler,
// building tensors with error-returning calls (gotch's own Decode uses Must*
// functions, which exit the process, and rejects plain dicts). A panic in
// the unpickler on malformed input becomes an error.
func decodePickle(path string) (m map[string]*ts.Tensor, err error) {
	defer func() {
		if r := recover(); r != nil {
			DropAll(m)
			m, err = nil, fmt.Errorf("not a readable PyTorch state dict: %v", r)
		}
	}()
	obj, err := pickle.LoadWithUnpickler(path, func(r io.Reader) pickle.Unpickler { return pickle.NewUnpickler(r) })
	if err != nil {
		return nil, err
	}
	type entry struct {
		key   any
		value any
	}
	var entries []entry
	switch d := obj.(type) {
	case *pickle.OrderedDict:
		for e := d.List.Front(); e != nil; e = e.Next() {
			oe := e.Value.(*pickle.OrderedDictEntry)
			entries = append(entries, entry{oe.Key, oe.Value})
		}
	case *pickle.Dict:
		for _, de := range *d {
			entries = append(entries, entry{de.Key, de.Value})
		}
	default:
		return nil, fmt.Errorf("top-level object is %T; expected a state dict (dict of tensors)", obj)
	}
	m = make(map[string]*ts.Tensor, len(entries))
	for _, e := range entries {
		name, ok := e.key.(string)
		if !ok {
			DropAll(m)
			return nil, fmt.Errorf("state dict key %v is not a string", e.key)
		}
		st, ok := e.value.(*pickle.StorageTensor)
		if !ok {
			continue // not a tensor (e.g. metadata)
		}
		t, err := rebuild(st)
		if err != nil {
			DropAll(m)
			return nil, fmt.Errorf("tensor %s: %w", name, err)
		}
		if t != nil {
			m[name] = t
		}
	}
	return m, nil
}

// rebuild makes a contiguous float32 tensor of a pickled storage view, or
// nil for non-floating storages (integer buffers).
func rebuild(st *pickle.StorageTensor) (*ts.Tensor, error) {
	dt := st.Source.DType()
	if dt != gotch.Float && dt != gotch.Double && dt != gotch.Half {
		return nil, nil
	}
	data := st.Source.GetData()
	if reflect.ValueOf(data).Len() == 0 {
		return nil, nil
	}
	size, stride := st.Size, st.Stride
	if len(size) == 0 {
		size, stride = []int64{1}, []int64{1}
	}
	flat, err := ts.OfSlice(data)
	if err != nil {
		return nil, err
	}
	view, err := flat.AsStrided(size, stride, []int64{st.StorageOffset}, true)
	if err != nil {
		return nil, err
	}
	f, err := view.Totype(gotch.Float, true)
	if err != nil {
		return nil, err
	}
	return f.Contiguous(true)
}

// DropAll drops every tensor of m.
func DropAll(m map[string]*ts.Tensor) {
	for k, t := range m {
		if t != nil {
			_ = t.Drop()
		}
		delete(m, k)
	}
}

// Spec is the expected shape of one parameter.
type Spec struct {
	Name  string
	Shape []int64
}

// Take moves the named parameters out of raw, checking their shapes, after
// stripping any of the given prefixes from raw's names. Names in raw that
// are not wanted are dropped. A missing or misshapen parameter is an error
// naming the file.
func Take(raw map[string]*ts.Tensor, file string, prefixes []string, want []Spec) (map[string]*ts.Tensor, error) {
	byName := make(map[string]*ts.Tensor, len(raw))
	for name, t := range raw {
		key := name
		for _, p := range prefixes {
			if strings.HasPrefix(key, p) {
				key = strings.TrimPrefix(key, p)
				break
			}
		}
		if old, dup := byName[key]; dup && old != nil {
			_ = old.Drop()
		}
		byName[key] = t
	}
	out := make(map[string]*ts.Tensor, len(want))
	var problems []string
	for _, w := range want {
		t, ok := byName[w.Name]
		if !ok {
			problems = append(problems, fmt.Sprintf("missing %s%v", w.Name, w.Shape))
			continue
		}
		sz, err := t.Size()
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", w.Name, err))
			continue
		}
		if !sameShape(sz, w.Shape) {
			problems = append(problems, fmt.Sprintf("%s has shape %v, expected %v", w.Name, sz, w.Shape))
			continue
		}
		out[w.Name] = t
		delete(byName, w.Name)
	}
	DropAll(byName)
	if len(problems) > 0 {
		DropAll(out)
		sort.Strings(problems)
		if len(problems) > 6 {
			problems = append(problems[:6], fmt.Sprintf("and %d more", len(problems)-6))
		}
		return nil, sdk.InvalidInputf("weights %s do not match config.json: %s", file, strings.Join(problems, "; "))
	}
	return out, nil
}

func sameShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
