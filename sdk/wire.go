package sdk

import (
	"encoding/binary"
	"fmt"
	"math"
)

// f32Bytes encodes float32 values as little-endian bytes.
func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// bytesF32 decodes little-endian float32 bytes, checking the count.
func bytesF32(b []byte, want int, what string) ([]float32, error) {
	if len(b) != 4*want {
		return nil, fmt.Errorf("%s: got %d bytes, expected %d float32 values (%d bytes)", what, len(b), want, 4*want)
	}
	v := make([]float32, want)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v, nil
}

func flatten(rows [][]float32) (flat []float32, cols int, err error) {
	if len(rows) == 0 {
		return nil, 0, nil
	}
	cols = len(rows[0])
	flat = make([]float32, 0, len(rows)*cols)
	for i, r := range rows {
		if len(r) != cols {
			return nil, 0, InvalidInputf("row %d has %d values, expected %d like row 0", i, len(r), cols)
		}
		flat = append(flat, r...)
	}
	return flat, cols, nil
}

func split(flat []float32, rows, cols int) [][]float32 {
	out := make([][]float32, rows)
	for i := range out {
		out[i] = flat[i*cols : (i+1)*cols : (i+1)*cols]
	}
	return out
}

func ints32(v []int) []int32 {
	out := make([]int32, len(v))
	for i, x := range v {
		out[i] = int32(x)
	}
	return out
}

func ints(v []int32) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x)
	}
	return out
}

func specialTokens32(m map[string]int) map[string]int32 {
	out := make(map[string]int32, len(m))
	for k, v := range m {
		out[k] = int32(v)
	}
	return out
}

func specialTokens(m map[string]int32) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = int(v)
	}
	return out
}
