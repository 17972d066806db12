# Source this to work on the dev stack by hand: `. local/dev-env.sh`, then
# `pulumi preview`, `bao read database/creds/metrics-readwrite`, psql ...
# Puts the toolchain on PATH and exports the local servers' addresses and
# credentials (read from their root-only files) and the dev stack's passphrase. The servers themselves are started by `make servers`.
_pgcreds_local=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$_pgcreds_local/../toolchain/env.sh" || return 1
eval "$("$_pgcreds_local/postgres.sh" env)"
eval "$("$_pgcreds_local/openbao.sh" env)"
# The dev stack's state holds only the local loopback servers' secrets, so its
# passphrase is a fixed, public one (its salt is in Pulumi.dev.yaml). Any other
# stack must bring its own PULUMI_CONFIG_PASSPHRASE.
if [[ -z "${PULUMI_CONFIG_PASSPHRASE:-}${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]]; then
  export PULUMI_CONFIG_PASSPHRASE=pgcreds-local-dev-stack
fi
unset _pgcreds_local
