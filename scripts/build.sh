#!/usr/bin/env bash
# build.sh: build knctl and every plugin into bin/ and bin/plugins/.
# Runs scripts/setup-gotch.sh first (installs libtorch with apt-get when
# missing and prepares gotch); safe to re-run, fast when nothing changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup-gotch.sh
VERSION="$(git describe --tags --always --dirty 2>/dev/null || echo dev)"
echo "build: knctl $VERSION -> bin/knctl, plugins -> bin/plugins/"
go build -ldflags "-X main.version=$VERSION" -o bin/knctl ./cmd/knctl
mkdir -p bin/plugins
go build -o bin/plugins/ \
  ./plugins/models/gpt2/cmd/knctl-model-gpt2 \
  ./plugins/models/bert/cmd/knctl-model-bert \
  ./plugins/ig/cmd/knctl-attributor-ig \
  ./plugins/noisegrad/cmd/knctl-attributor-noisegrad
ls bin/plugins
