#!/usr/bin/env bash
# Builds (once) the pinned Pulumi CLI, our Python language host and the SDK's
# helper scripts into a cache folder outside the repository, keyed by a hash
# of everything that decides the result. A warm cache returns in well under a
# second. Prints the bin folder on its last line.
#
# Where an official `pulumi` CLI and its Python language host are already on
# PATH, nothing is built and their folder is printed instead
# (PGCREDS_BUILD_TOOLCHAIN=1 builds anyway).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=pins.env
source "$here/pins.env"

key=$( (cd "$here" && cat pins.env build.sh cli/go.mod cli/go.sum \
        pulumi-language-python/go.mod pulumi-language-python/go.sum pulumi-language-python/main.go \
        && go env GOVERSION GOARCH) | sha256sum | cut -c1-16)
root="${XDG_CACHE_HOME:-$HOME/.cache}/pg-dynamic-creds/toolchain"
prefix="$root/$key"
bin="$prefix/bin"

log() { printf '[toolchain %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ "${PGCREDS_BUILD_TOOLCHAIN:-}" != 1 ]] && official=$(command -v pulumi) \
   && [[ "$official" != "$root"/* ]] && command -v pulumi-language-python >/dev/null; then
  log "using the pulumi CLI already on PATH: $official ($("$official" version))"
  dirname "$official"
  exit 0
fi

if [[ -f "$prefix/.complete" ]]; then
  touch "$prefix/.complete"  # last used: what pruning goes by
  log "cached: $bin"
  echo "$bin"
  exit 0
fi

# Runs one build step with elapsed time and peak memory; on failure names the
# step and the module and shows Go's own error output.
step() {
  local name=$1 module=$2; shift 2
  local started=$SECONDS out="$prefix/logs/$name.log"
  log "building $name ($module) ..."
  # A heartbeat, since a cold build of the CLI takes minutes.
  ( while sleep 30; do log "  still building $name: $((SECONDS - started))s"; done ) &
  local heartbeat=$!
  local status=0
  if [[ -x /usr/bin/time ]]; then
    /usr/bin/time -f '%M' -o "$out.rss" "$@" >"$out" 2>&1 || status=$?
  else
    echo 0 > "$out.rss"; "$@" >"$out" 2>&1 || status=$?
  fi
  kill "$heartbeat" 2>/dev/null; wait "$heartbeat" 2>/dev/null || true
  if [[ $status -ne 0 ]]; then
    log "FAILED step '$name' for module $module after $((SECONDS - started))s; go said:"
    sed 's/^/    /' "$out" >&2
    exit 1
  fi
  log "built $name in $((SECONDS - started))s, peak $(( $(cat "$out.rss") / 1024 )) MiB"
}

rm -rf "$prefix" && mkdir -p "$bin" "$prefix/logs"
started=$SECONDS
export CGO_ENABLED=0 GOFLAGS=-mod=readonly
common=(-trimpath -tags osusergo,grpcnotrace)

( cd "$here/cli" && step pulumi "github.com/pulumi/pulumi/pkg/v3@v$PULUMI_VERSION" \
    go build "${common[@]}" -o "$bin/pulumi" \
    -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_VERSION" \
    github.com/pulumi/pulumi/pkg/v3/cmd/pulumi )

( cd "$here/pulumi-language-python" && step pulumi-language-python "pgcreds.local/toolchain/pulumi-language-python" \
    go build "${common[@]}" -o "$bin/pulumi-language-python" \
    -ldflags "-s -w -X main.version=$PULUMI_LANGUAGE_PYTHON_VERSION" . )

# The exec shim and the dynamic-provider launcher ship in the sdk/v3 module zip.
sdk_dir=$(cd "$here/cli" && go list -m -f '{{.Dir}}' "github.com/pulumi/pulumi/sdk/v3")
install -m 0755 "$sdk_dir/python/cmd/pulumi-language-python-exec" "$bin/"
install -m 0755 "$sdk_dir/python/dist/pulumi-resource-pulumi-python" "$bin/"

"$bin/pulumi" version >/dev/null
touch "$prefix/.complete"
log "toolchain ready in $((SECONDS - started))s: $bin ($(du -sh "$prefix" | cut -f1))"

# Other pin sets (about 130 MB each) unused for 30 days go, and builds that
# failed over a day ago (a younger one may still be running in another clone).
for other in "$root"/*/; do
  other=${other%/}
  [[ "$other" == "$prefix" ]] && continue
  if [[ -z "$(find "$other" -maxdepth 1 -name .complete -mtime -30 2>/dev/null)" \
        && -n "$(find "$other" -maxdepth 0 -mtime +1 2>/dev/null)" ]]; then
    log "removing an old toolchain: $other"
    rm -rf "$other"
  fi
done
echo "$bin"
