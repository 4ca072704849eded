// Package torchsmoke holds a smoke test proving gotch builds and runs against the machine's libtorch (run scripts/setup-gotch.sh first).
package torchsmoke
