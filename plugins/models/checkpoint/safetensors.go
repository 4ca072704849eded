package checkpoint

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"

	"github.com/knctl/knctl/internal/atomicfile"
	"github.com/knctl/knctl/sdk"
)

// maxHeader bounds the JSON header so a corrupt length cannot make us
// allocate gigabytes.
const maxHeader = 100 << 20

// TensorInfo is one entry of a safetensors header.
type TensorInfo struct {
	Name   string
	DType  string
	Shape  []int64
	Offset int64 // absolute offset in the file
	Size   int64 // bytes
}

// Numel is the number of elements.
func (t TensorInfo) Numel() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Safetensors is an open safetensors file whose header has been validated.
type Safetensors struct {
	path    string
	f       *os.File
	tensors map[string]TensorInfo
}

var dtypeSize = map[string]int64{"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}

// OpenSafetensors opens path and validates its header against the file
// size, so that a truncated or corrupt file is reported before any tensor
// is built.
func OpenSafetensors(path string) (*Safetensors, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, sdk.InvalidInputf("open %s: %w", path, err)
	}
	st, err := parseHeader(path, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return st, nil
}

func parseHeader(path string, f *os.File) (*Safetensors, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	corrupt := func(format string, args ...any) error {
		return sdk.InvalidInputf("corrupt safetensors file %s: %s", path, fmt.Sprintf(format, args...))
	}
	var lenBuf [8]byte
	if _, err := io.ReadFull(f, lenBuf[:]); err != nil {
		return nil, corrupt("file of %d bytes is too short for the 8-byte header length", fi.Size())
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > maxHeader || int64(n) > fi.Size()-8 {
		return nil, corrupt("header length %d does not fit the file size %d", n, fi.Size())
	}
	hdr := make([]byte, n)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return nil, corrupt("read header: %v", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &raw); err != nil {
		return nil, corrupt("header is not a JSON object: %v", err)
	}
	dataStart := int64(8 + n)
	dataLen := fi.Size() - dataStart
	s := &Safetensors{path: path, f: f, tensors: make(map[string]TensorInfo, len(raw))}
	for name, msg := range raw {
		if name == "__metadata__" {
			continue
		}
		var e struct {
			DType       string  `json:"dtype"`
			Shape       []int64 `json:"shape"`
			DataOffsets []int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(msg, &e); err != nil {
			return nil, corrupt("tensor %s: %v", name, err)
		}
		size, ok := dtypeSize[e.DType]
		if !ok {
			return nil, corrupt("tensor %s: unknown dtype %q", name, e.DType)
		}
		if len(e.DataOffsets) != 2 || e.DataOffsets[0] < 0 || e.DataOffsets[1] < e.DataOffsets[0] {
			return nil, corrupt("tensor %s: bad data_offsets %v", name, e.DataOffsets)
		}
		t := TensorInfo{Name: name, DType: e.DType, Shape: e.Shape, Offset: dataStart + e.DataOffsets[0], Size: e.DataOffsets[1] - e.DataOffsets[0]}
		for _, d := range e.Shape {
			if d < 0 {
				return nil, corrupt("tensor %s: negative dimension in shape %v", name, e.Shape)
			}
		}
		if want := t.Numel() * size; want != t.Size {
			return nil, corrupt("tensor %s: %s%v needs %d bytes, data_offsets give %d", name, e.DType, e.Shape, want, t.Size)
		}
		if e.DataOffsets[1] > dataLen {
			return nil, corrupt("tensor %s ends at byte %d of the data section, which has only %d bytes (truncated file?)", name, e.DataOffsets[1], dataLen)
		}
		s.tensors[name] = t
	}
	return s, nil
}

// Close closes the file.
func (s *Safetensors) Close() error { return s.f.Close() }

// Path is the file's path.
func (s *Safetensors) Path() string { return s.path }

// Names lists the tensors, sorted.
func (s *Safetensors) Names() []string {
	names := make([]string, 0, len(s.tensors))
	for n := range s.tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Info returns a tensor's header entry.
func (s *Safetensors) Info(name string) (TensorInfo, bool) {
	t, ok := s.tensors[name]
	return t, ok
}

// Float32 reads a floating-point tensor as float32 values (little-endian
// bytes), converting F16, BF16 and F64.
func (s *Safetensors) Float32(name string) ([]byte, TensorInfo, error) {
	t, ok := s.tensors[name]
	if !ok {
		return nil, t, sdk.InvalidInputf("%s: no tensor %q", s.path, name)
	}
	raw := make([]byte, t.Size)
	if _, err := s.f.ReadAt(raw, t.Offset); err != nil {
		return nil, t, sdk.InvalidInputf("read tensor %s from %s: %w", name, s.path, err)
	}
	switch t.DType {
	case "F32":
		return raw, t, nil
	case "F16", "BF16", "F64":
		out := make([]byte, 4*t.Numel())
		for i := int64(0); i < t.Numel(); i++ {
			var v float32
			switch t.DType {
			case "F16":
				v = halfToFloat(binary.LittleEndian.Uint16(raw[2*i:]))
			case "BF16":
				v = math.Float32frombits(uint32(binary.LittleEndian.Uint16(raw[2*i:])) << 16)
			case "F64":
				v = float32(math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:])))
			}
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		}
		return out, t, nil
	}
	return nil, t, sdk.InvalidInputf("%s: tensor %s has dtype %s; expected a floating-point tensor", s.path, name, t.DType)
}

func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0 && frac == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal
		f := float32(frac) / 1024 * float32(math.Pow(2, -14))
		if sign != 0 {
			return -f
		}
		return f
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | frac<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | frac<<13)
}

// WriteTensor is one float32 tensor to write.
type WriteTensor struct {
	Name  string
	Shape []int64
	Data  []byte // little-endian float32
}

// WriteSafetensors writes tensors to path atomically (a temporary file in
// the same directory, renamed into place), so a failure never leaves a
// partial file behind.
func WriteSafetensors(path string, tensors []WriteTensor, metadata map[string]string) error {
	sorted := append([]WriteTensor(nil), tensors...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	header := make(map[string]any, len(sorted)+1)
	if len(metadata) > 0 {
		header["__metadata__"] = metadata
	}
	var off int64
	for _, t := range sorted {
		n := int64(4)
		for _, d := range t.Shape {
			n *= d
		}
		if n != int64(len(t.Data)) {
			return fmt.Errorf("write %s: tensor %s: shape %v needs %d bytes, got %d", path, t.Name, t.Shape, n, len(t.Data))
		}
		header[t.Name] = map[string]any{"dtype": "F32", "shape": t.Shape, "data_offsets": []int64{off, off + n}}
		off += n
	}
	hdr, err := json.Marshal(header)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// Pad the header with spaces to 8 bytes so the data is aligned, as the
	// reference implementation does.
	for len(hdr)%8 != 0 {
		hdr = append(hdr, ' ')
	}
	return atomicfile.Write(path, func(w io.Writer) error {
		var lenBuf [8]byte
		binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(hdr)))
		if _, err := w.Write(lenBuf[:]); err != nil {
			return err
		}
		if _, err := w.Write(hdr); err != nil {
			return err
		}
		for _, t := range sorted {
			if _, err := w.Write(t.Data); err != nil {
				return err
			}
		}
		return nil
	})
}
