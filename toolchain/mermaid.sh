#!/usr/bin/env bash
# Installs (once) Mermaid's parser, pinned by toolchain/mermaid/package-lock.json,
# into the toolchain cache (keyed by the lock file's hash) and prints the path of
# parse.mjs there: `node <path>` reads diagrams separated by a line "%%%" on stdin
# and prints "ok" or the parser's error for each.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)/mermaid
key=$(cat "$here/package.json" "$here/package-lock.json" "$here/parse.mjs" | sha256sum | cut -c1-16)
dir="${XDG_CACHE_HOME:-$HOME/.cache}/pg-dynamic-creds/mermaid/$key"
if [[ ! -f "$dir/.installed" ]]; then
  printf '[toolchain] installing the Mermaid parser (npm ci, pinned)\n' >&2
  rm -rf "$dir" && mkdir -p "$dir"
  cp "$here/package.json" "$here/package-lock.json" "$here/parse.mjs" "$dir/"
  if ! out=$(cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts 2>&1); then
    printf '[toolchain] FAILED: npm ci of the Mermaid parser:\n%s\n' "$out" >&2
    exit 1
  fi
  touch "$dir/.installed"
fi
echo "$dir/parse.mjs"
