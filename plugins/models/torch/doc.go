// Package torch is the libtorch (gotch) code the model backends share:
// scoped tensor bookkeeping, weight loading from safetensors and PyTorch
// pickles, the weight store with bit-exact undo of edits and noise, FFN
// activation functions and interventions, and saving checkpoints.
//
// Every tensor created through a Scope is dropped when the scope closes:
// the Go garbage collector does not free libtorch memory. Errors never
// exit the process (gotch's Must* functions call log.Fatal), so a bad
// request becomes an error returned to the host, not a dead plugin.
package torch
