#!/usr/bin/env bash
# Unpacks (once) the HashiCorp Vault server of ../shared/vault/ into a cache folder
# outside the repository, keyed by its pinned sha256, after checking the bundle's
# and the binary's sha256 against the pins below (from its MANIFEST.md), as
# build.sh does for the plugins. Prints the binary's path. (Pinned here rather
# than in pins.env, which keys the CLI's build: a new Vault must not rebuild it.)
set -euo pipefail

VAULT_SERVER_VERSION=1.21.4
VAULT_BUNDLE=vault_${VAULT_SERVER_VERSION}_linux_amd64_noui.tar.xz
VAULT_BUNDLE_SHA256=939f021d1d1a72aa3cb6fabd9dfa19b22ea88fa7dde37f26193f2bedd9de5f38
VAULT_BINARY_SHA256=048d148a7c77c7a37a35cd1270bc642ca8d53d05e4fa318eef008349d3af5442

here=$(cd "$(dirname "$0")" && pwd)
bundle_dir=${PGCREDS_VAULT_BUNDLE_DIR:-$here/../../shared/vault}
target="${XDG_CACHE_HOME:-$HOME/.cache}/pg-dynamic-creds/vault/${VAULT_BINARY_SHA256:0:16}"
log() { printf '[toolchain %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ -x "$target/vault" ]]; then echo "$target/vault"; exit 0; fi
[[ -f "$bundle_dir/$VAULT_BUNDLE" ]] || {
  log "ERROR: no HashiCorp Vault bundle at $bundle_dir/$VAULT_BUNDLE (PGCREDS_VAULT_BUNDLE_DIR names its folder)"; exit 1; }
actual=$(sha256sum "$bundle_dir/$VAULT_BUNDLE" | cut -d' ' -f1)
[[ "$actual" == "$VAULT_BUNDLE_SHA256" ]] || {
  log "ERROR: $VAULT_BUNDLE has sha256 $actual, not the pinned $VAULT_BUNDLE_SHA256"; exit 1; }
log "unpacking HashiCorp Vault $VAULT_SERVER_VERSION into $target"
install -d "$target"
staging=$(mktemp -d "$target/.unpack.XXXXXX")
tar -xJf "$bundle_dir/$VAULT_BUNDLE" -C "$staging" vault
actual=$(sha256sum "$staging/vault" | cut -d' ' -f1)
[[ "$actual" == "$VAULT_BINARY_SHA256" ]] || {
  rm -rf "$staging"; log "ERROR: the vault binary has sha256 $actual, not the pinned $VAULT_BINARY_SHA256"; exit 1; }
chmod 755 "$staging/vault" && mv "$staging/vault" "$target/vault" && rmdir "$staging"
echo "$target/vault"
