#!/usr/bin/env bash
# test.sh: build everything (see build.sh), then vet and run every test.
# Extra arguments go to `go test` (e.g. -run Parity -v).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/build.sh
go vet ./...
# Tests that load libtorch in-process get what knctl gives its plugins:
# OpenMP threads that sleep instead of spinning against OpenBLAS's.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
go test "$@" ./...
