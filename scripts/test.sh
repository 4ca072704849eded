#!/usr/bin/env bash
# test.sh: build everything (see build.sh), then vet and run every test.
# Extra arguments go to `go test` (e.g. -run Parity -v).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/build.sh
go vet ./...
go test "$@" ./...
