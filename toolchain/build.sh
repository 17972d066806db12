#!/usr/bin/env bash
# Makes (once) the pinned toolchain in a cache folder outside the repository,
# keyed by a hash of everything that decides the result:
#   bin/   the Pulumi CLI built from Go modules, and beside it the official
#          Python language host (from its bundle in ../shared/plugins) and
#          Pulumi YAML's (built from toolchain/yaml, for the package's example)
#   home/  a PULUMI_HOME with the official provider plugins installed from
#          their bundles (sha256 checked against MANIFEST.tsv)
# A warm cache returns in well under a second. Prints the bin folder on its
# last line, after a line `home=<PULUMI_HOME>` (empty when plugin acquisition
# is left to Pulumi); env.sh reads both.
#
# Where an official `pulumi` CLI and its Python language host are already on
# PATH, the CLI is not built and their folder is printed instead
# (PGCREDS_BUILD_TOOLCHAIN=1 builds anyway). The plugins still come from the
# bundles when the bundle folder exists; without it (a machine with internet)
# env.sh leaves plugin acquisition to Pulumi.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=pins.env
source "$here/pins.env"
plugins_dir=${PGCREDS_PLUGINS_DIR:-$here/../../shared/plugins}
manifest="$plugins_dir/MANIFEST.tsv"
root="${XDG_CACHE_HOME:-$HOME/.cache}/pg-dynamic-creds/toolchain"

log() { printf '[toolchain %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() { log "ERROR: $*"; exit 1; }

official=""
if [[ "${PGCREDS_BUILD_TOOLCHAIN:-}" != 1 ]] && official=$(command -v pulumi) \
   && [[ "$official" != "$root"/* ]] && command -v pulumi-language-python >/dev/null; then
  log "using the pulumi CLI already on PATH: $official"
else
  official=""
fi

# The key: pins, this script, the CLI module, the plugin manifest, the Go version.
key=$( (cd "$here" && cat pins.env build.sh cli/go.mod cli/go.sum yaml/go.mod yaml/go.sum yaml/main.go && ([[ -f "$manifest" ]] && cat "$manifest" || true) \
        && echo "official=$official" && (go env GOVERSION GOARCH 2>/dev/null || true)) | sha256sum | cut -c1-16)
prefix="$root/$key"
bin="$prefix/bin"

if [[ -f "$prefix/.complete" ]]; then
  touch "$prefix/.complete"  # last used: what pruning goes by
  cat "$prefix/result"
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

# Prints the path of a bundle after checking it against MANIFEST.tsv.
bundle() {
  local kind=$1 name=$2 version=$3 file sum actual
  read -r file sum < <(awk -F'\t' -v k="$kind" -v n="$name" -v v="$version" \
    '$1 == k && $2 == n && $3 == v { print $4, $5 }' "$manifest")
  [[ -n "${file:-}" ]] || fail "$manifest has no $kind plugin '$name' at version $version (the pin in toolchain/pins.env)"
  [[ -f "$plugins_dir/$file" ]] || fail "plugin bundle missing: $plugins_dir/$file (listed in $manifest)"
  actual=$(sha256sum "$plugins_dir/$file" | cut -d' ' -f1)
  [[ "$actual" == "$sum" ]] || fail "plugin bundle $plugins_dir/$file does not match MANIFEST.tsv: sha256 $actual, expected $sum; fetch it again"
  echo "$plugins_dir/$file"
}

# Every bundle is checked before anything is built, so a bad one fails at once.
declare -A bundles=()
if [[ -f "$manifest" ]]; then
  [[ -n "$official" ]] || bundles[python]=$(bundle language python "$PULUMI_LANGUAGE_PYTHON_VERSION")
  for provider in vault postgresql random aiven; do
    var="PROVIDER_${provider^^}_VERSION"
    bundles[$provider]=$(bundle resource "$provider" "${!var}")
  done
elif [[ -z "$official" ]]; then
  fail "no plugin bundles at $plugins_dir (MANIFEST.tsv missing): set PGCREDS_PLUGINS_DIR to the folder that holds them"
fi

rm -rf "$prefix" && mkdir -p "$bin" "$prefix/logs" "$prefix/home"
started=$SECONDS

if [[ -z "$official" ]]; then
  export CGO_ENABLED=0 GOFLAGS=-mod=readonly
  ( cd "$here/cli" && step pulumi "github.com/pulumi/pulumi/pkg/v3@v$PULUMI_VERSION" \
      go build -trimpath -tags osusergo,grpcnotrace -o "$bin/pulumi" \
      -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_VERSION" \
      github.com/pulumi/pulumi/pkg/v3/cmd/pulumi )
  # YAML's language host, where the CLI looks for it first.
  ( cd "$here/yaml" && step pulumi-language-yaml "github.com/pulumi/pulumi-yaml@v$PULUMI_YAML_VERSION" \
      go build -trimpath -o "$bin/pulumi-language-yaml" -ldflags "-s -w" . )
  # The official language host, in the CLI's own folder (the CLI expects it there).
  tar -xJf "${bundles[python]}" -C "$bin" \
    ./pulumi-language-python ./pulumi-language-python-exec ./pulumi-resource-pulumi-python
fi
cli=${official:-$bin/pulumi}

if [[ -f "$manifest" ]]; then
  unpacked=$(mktemp -d); trap 'rm -rf "$unpacked"' EXIT
  for provider in vault postgresql random aiven; do
    var="PROVIDER_${provider^^}_VERSION"; version=${!var}
    mkdir -p "$unpacked/$provider"
    tar -xJf "${bundles[$provider]}" -C "$unpacked/$provider"
    PULUMI_HOME="$prefix/home" PULUMI_SKIP_UPDATE_CHECK=true \
      "$cli" plugin install resource "$provider" "$version" --file "$unpacked/$provider/pulumi-resource-$provider" \
      >"$prefix/logs/plugin-$provider.log" 2>&1 \
      || { cat "$prefix/logs/plugin-$provider.log" >&2; fail "installing the $provider plugin $version failed"; }
  done
  log "installed the vault, postgresql, random and aiven plugins into $prefix/home"
fi

"$cli" version >/dev/null
{ echo "home=$([[ -f "$manifest" ]] && echo "$prefix/home")"; echo "${official:+$(dirname "$official")}${official:-$bin}"; } \
  > "$prefix/result"
touch "$prefix/.complete"
log "toolchain ready in $((SECONDS - started))s: $bin ($(du -sh "$prefix" | cut -f1))"

# Other pin sets unused for 30 days go, and builds that failed over a day ago
# (a younger one may still be running in another clone).
for other in "$root"/*/; do
  other=${other%/}
  [[ "$other" == "$prefix" ]] && continue
  if [[ -z "$(find "$other" -maxdepth 1 -name .complete -mtime -30 2>/dev/null)" \
        && -n "$(find "$other" -maxdepth 0 -mtime +1 2>/dev/null)" ]]; then
    log "removing an old toolchain: $other"
    rm -rf "$other"
  fi
done
cat "$prefix/result"
