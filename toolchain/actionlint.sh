#!/usr/bin/env bash
# Installs (once) the pinned actionlint into the toolchain cache and prints its path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/pins.env"
bin="${XDG_CACHE_HOME:-$HOME/.cache}/pg-dynamic-creds/actionlint/v$ACTIONLINT_VERSION"
if [[ ! -x "$bin/actionlint" ]]; then
  printf '[toolchain] building actionlint v%s\n' "$ACTIONLINT_VERSION" >&2
  mkdir -p "$bin"
  if ! out=$(CGO_ENABLED=0 GOBIN="$bin" go install "github.com/rhysd/actionlint/cmd/actionlint@v$ACTIONLINT_VERSION" 2>&1); then
    printf '[toolchain] FAILED: go install github.com/rhysd/actionlint/cmd/actionlint@v%s:\n%s\n' \
      "$ACTIONLINT_VERSION" "$out" >&2
    exit 1
  fi
fi
echo "$bin/actionlint"
