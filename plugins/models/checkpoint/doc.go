// Package checkpoint finds and reads HuggingFace checkpoints without a tensor
// library: it resolves a directory or an offline HuggingFace cache id, reads
// config.json, and reads and writes safetensors files. Both model backends
// share it.
package checkpoint
