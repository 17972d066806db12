#!/usr/bin/env bash
# Local PostgreSQL for the dev stack and the tests: start | stop | status | env.
# Runs as the `postgres` user (PostgreSQL refuses root) in a data folder of
# its own, listening on 127.0.0.1 only, with a generated superuser password.
set -euo pipefail
source "$(dirname "$0")/common.sh"

dir="$PGCREDS_LOCAL_DIR/postgres"
data="$dir/data"
password_file="$dir/superuser.password"
tls="$dir/tls"

pg_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [[ -z "$bin" ]]; then
    log "installing Debian's postgresql package"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
    # Debian's package starts a cluster of its own on 5432; we do not use it.
    service postgresql stop >/dev/null 2>&1 || true
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  echo "$bin"
}

as_postgres() { runuser -u postgres -- "$@"; }

# A server certificate from the test CA for 127.0.0.1 / localhost, so that
# clients can use sslmode=verify-full (the Aiven stand-in's services do).
make_tls() {
  ensure_test_ca
  issue_server_cert "$tls" postgres
}

running() { [[ -f "$data/postmaster.pid" ]] && as_postgres "$(pg_bin)/pg_ctl" -D "$data" status >/dev/null 2>&1; }

start() {
  local bin; bin=$(pg_bin)
  mkdir -p "$PGCREDS_LOCAL_DIR" && chmod 755 "$PGCREDS_LOCAL_DIR"
  if [[ ! -f "$data/PG_VERSION" ]]; then
    log "initializing a cluster in $data"
    install -d -o postgres -g postgres -m 700 "$dir"
    ( umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(24))' > "$password_file" )
    chown postgres "$password_file"
    as_postgres "$bin/initdb" -D "$data" -U postgres --pwfile="$password_file" \
      --auth-local=peer --auth-host=scram-sha-256 -E UTF8 >/dev/null
  fi
  make_tls
  if running; then log "PostgreSQL already running on 127.0.0.1:$PGCREDS_PG_PORT"; return; fi
  local options="-c listen_addresses=127.0.0.1 -p $PGCREDS_PG_PORT -c unix_socket_directories=$dir"
  options+=" -c max_connections=200 -c ssl=on -c ssl_cert_file=$tls/server.pem -c ssl_key_file=$tls/server.key"
  as_postgres "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start -o "$options" >/dev/null
  log "PostgreSQL started on 127.0.0.1:$PGCREDS_PG_PORT (data: $data)"
}

stop() {
  if running; then as_postgres "$(pg_bin)/pg_ctl" -D "$data" -m fast -w stop >/dev/null; log "PostgreSQL stopped"; fi
}

# Prints the connection settings as shell exports. No password: the superuser's
# stays in its root-only file, read once by the bootstrap (local/bootstrap.sh) and
# by the tests' own checks; deploys log in with what Vault issues.
env_() {
  cat <<EOT
export PGCREDS_LOCAL_DIR=$PGCREDS_LOCAL_DIR
export PGHOST=127.0.0.1 PGPORT=$PGCREDS_PG_PORT PGDATABASE=postgres
export PGCREDS_SUPERUSER_PASSWORD_FILE=$password_file
export PGCREDS_TEST_CA=$PGCREDS_TEST_CA
EOT
}

dispatch "$@"
