// Package framework is the host side of knctl: it finds plugin binaries,
// launches and supervises them, and runs the knowledge-neuron pipeline on
// the models and attributors they serve.
package framework
