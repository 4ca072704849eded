#!/usr/bin/env bash
# setup-gotch.sh: prepare the gotch (Go bindings for libtorch) build used by
# knctl's model plugins.
#
#   scripts/setup-gotch.sh            # idempotent; ~0.05 s when already up to date
#   scripts/setup-gotch.sh --force    # recreate .build/gotch even if the stamp matches
#
# What it does:
#   1. makes sure Debian's libtorch (1.13.1, package libtorch-dev), OpenBLAS
#      (libopenblas0-pthread: without it libtorch's matrix products use the
#      reference BLAS, ~20x slower) and g++ are installed (apt-get, with sudo
#      when not root);
#   2. downloads github.com/sugarme/gotch@v0.7.0 into the Go module cache;
#   3. copies it to <repo>/.build/gotch (git-ignored; go.mod has
#      `replace github.com/sugarme/gotch => ./.build/gotch`), replacing
#      libtch/lib.go with scripts/gotch/lib.go.tmpl (CPU-only build flags) and
#      adding scripts/gotch/knctl_compat.h (libtorch 1.11 -> 1.13 shims), and
#      fixing gotch's reads of C int results (see below).
# A stamp file (.build/gotch/.knctl-setup-stamp) records a hash of the gotch
# version, the template, the header and this script, so the copy is redone only
# when one of them changes. gotch's source is never committed to the repository.
#
# Only packages that import gotch need this; the pure-Go packages build without it.
set -euo pipefail

GOTCH_MODULE=github.com/sugarme/gotch
GOTCH_VERSION=v0.7.0

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TEMPLATE="$ROOT/scripts/gotch/lib.go.tmpl"
COMPAT="$ROOT/scripts/gotch/knctl_compat.h"
BUILD_DIR="$ROOT/.build"
DEST="$BUILD_DIR/gotch"
STAMP_NAME=.knctl-setup-stamp

FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup-gotch: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { echo "setup-gotch: $*"; }
die() { echo "setup-gotch: error: $*" >&2; exit 1; }

[[ -f "$TEMPLATE" ]] || die "missing $TEMPLATE"
[[ -f "$COMPAT" ]] || die "missing $COMPAT"
command -v go >/dev/null 2>&1 || die "the go command is not on PATH"

# --- 1. libtorch (Debian) and a C++ compiler ---------------------------------
TORCH_HEADER=/usr/include/torch/csrc/api/include/torch/torch.h

have_libtorch() {
  [[ -f "$TORCH_HEADER" ]] || return 1
  local lib
  for lib in /usr/lib/*/libtorch.so /usr/lib/libtorch.so; do
    [[ -e "$lib" ]] && return 0
  done
  return 1
}

# Debian's libtorch does its matrix products through the generic libblas.so.3;
# with only the reference BLAS installed they run ~20x slower than with
# OpenBLAS, which takes over libblas.so.3 through update-alternatives.
have_openblas() {
  compgen -G "/usr/lib/*/openblas-pthread/libblas.so.3" >/dev/null
}

missing_pkgs=()
have_libtorch || missing_pkgs+=(libtorch-dev)
have_openblas || missing_pkgs+=(libopenblas0-pthread)
command -v g++ >/dev/null 2>&1 || missing_pkgs+=(g++)

if ((${#missing_pkgs[@]} > 0)); then
  command -v apt-get >/dev/null 2>&1 || die "need ${missing_pkgs[*]} but apt-get is not available"
  SUDO=()
  if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "need root or sudo to install ${missing_pkgs[*]}"
    SUDO=(sudo)
  fi
  log "installing ${missing_pkgs[*]} with apt-get (libtorch-dev is ~130 MB, takes a minute or two)"
  ${SUDO[@]+"${SUDO[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update
  ${SUDO[@]+"${SUDO[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing_pkgs[@]}"
  have_libtorch || die "libtorch-dev installed but $TORCH_HEADER or libtorch.so is still missing"
  log "installed ${missing_pkgs[*]}"
else
  log "libtorch-dev, OpenBLAS and g++ already installed"
fi

# --- 2. gotch source in the module cache --------------------------------------
# Run outside the repository so the lookup does not depend on the state of
# knctl's go.mod (the replace directive points at the folder we are creating).
mod_json="$(cd / && GOFLAGS=-mod=mod go mod download -json "$GOTCH_MODULE@$GOTCH_VERSION")" ||
  die "go mod download $GOTCH_MODULE@$GOTCH_VERSION failed"
SRC="$(printf '%s\n' "$mod_json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' | head -n1)"
if [[ -z "$SRC" ]]; then
  SRC="$(go env GOMODCACHE)/$GOTCH_MODULE@$GOTCH_VERSION"
fi
[[ -f "$SRC/libtch/torch_api.cpp" ]] || die "gotch source not found at $SRC"

# --- 3. the patched copy in .build/gotch ---------------------------------------
stamp="$(
  {
    echo "$GOTCH_MODULE@$GOTCH_VERSION"
    printf '%s\n' "$mod_json" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",\{0,1\}$/\1/p'
    sha256sum <"$TEMPLATE"
    sha256sum <"$COMPAT"
    sha256sum <"${BASH_SOURCE[0]}" # the patch step below lives in this script
  } | sha256sum | cut -d' ' -f1
)"

if ((FORCE == 0)) && [[ -f "$DEST/$STAMP_NAME" ]] && [[ "$(cat "$DEST/$STAMP_NAME")" == "$stamp" ]] &&
  [[ -f "$DEST/go.mod" && -f "$DEST/libtch/lib.go" && -f "$DEST/libtch/knctl_compat.h" ]]; then
  log ".build/gotch is up to date ($GOTCH_MODULE@$GOTCH_VERSION, stamp ${stamp:0:12})"
  exit 0
fi

mkdir -p "$BUILD_DIR"
TMP="$(mktemp -d "$BUILD_DIR/gotch.tmp.XXXXXX")"
chmod 0755 "$TMP" # mktemp -d creates it 0700
cleanup() {
  if [[ -n "${TMP:-}" && -d "$TMP" ]]; then
    chmod -R u+w "$TMP"
    rm -rf "$TMP"
  fi
}
trap cleanup EXIT

log "copying $SRC -> .build/gotch"
cp -R "$SRC/." "$TMP/"
chmod -R u+w "$TMP" # module cache files are read-only
install -m 0644 "$TEMPLATE" "$TMP/libtch/lib.go"
install -m 0644 "$COMPAT" "$TMP/libtch/knctl_compat.h"

# gotch v0.7.0 reads C `int` results as `*(*int)(unsafe.Pointer(&x))`: 8 bytes
# from a 4-byte variable, so the upper half is stack garbage. Measured here:
# ts.GradSetEnabled returned the wrong previous state (so ts.NoGrad, which
# restores that state, could leave grad mode off). Other callers that truncate
# the result back to int32 happened to be unaffected. Rewrite every such read
# as a plain conversion, int(x).
patched=0
for f in "$TMP"/libtch/*.go; do
  n="$(grep -c '\*(\*int)(unsafe\.Pointer(&[A-Za-z_][A-Za-z0-9_]*))' "$f" || true)"
  if ((n > 0)); then
    sed -i 's/\*(\*int)(unsafe\.Pointer(&\([A-Za-z_][A-Za-z0-9_]*\)))/int(\1)/g' "$f"
    patched=$((patched + n))
    # device.go used unsafe only for this read: drop the now-unused import.
    if ! grep -q 'unsafe\.' "$f"; then
      sed -i '/^[[:space:]]*"unsafe"[[:space:]]*$/d; /^import "unsafe"$/d' "$f"
    fi
  fi
done
if grep -q '\*(\*int)(unsafe\.Pointer(&' "$TMP"/libtch/*.go; then
  die "could not rewrite every C int read in libtch"
fi
log "rewrote $patched C int reads in libtch/*.go as int(x)"
printf '%s\n' "$stamp" >"$TMP/$STAMP_NAME"

if [[ -e "$DEST" ]]; then
  chmod -R u+w "$DEST"
  rm -rf "$DEST"
fi
mv "$TMP" "$DEST"
TMP=
log "wrote .build/gotch/libtch/lib.go (CPU, libtorch 1.13.1), libtch/knctl_compat.h and the int-read fix"
log "done; the first build of a package importing gotch compiles the libtorch glue (2-4 min, ~1.5 GB RAM), later builds are cached"
