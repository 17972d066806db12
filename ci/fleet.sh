#!/usr/bin/env bash
# What deploy.yml's `applications` job runs on a merge to main: every application
# stack in PGCREDS_APPLICATION_STACKS (space-separated) brought up by one command,
# PGCREDS_PARALLEL (default 4) at a time (deployer/fleet.py --ci): each as
# ci/deploy.sh runs a stack (refreshed, the policy pack enforced, made on its first
# deploy), each as its own application's deploy login. A line per stack, one table,
# each failure's reasons; a failed stack does not stop the others and fails the job.
# `ci/fleet.sh preview` previews them instead. The job's Vault token is the jwt
# role pgcreds-fleet-deploy's (every application's deploy policy; `make bootstrap`
# writes it), revoked with the logins it read when the job ends.
# From the workflow: PGCREDS_APPLICATION_STACKS, PULUMI_BACKEND_URL, VAULT_ADDR,
# VAULT_TOKEN; PGCREDS_PROJECT (default: the checkout), PGCREDS_PARALLEL.
set -euo pipefail
action=${1:-up}
[[ "$action" == up || "$action" == preview ]] || { echo "usage: ci/fleet.sh [up|preview]" >&2; exit 2; }
PGCREDS_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for variable in PGCREDS_APPLICATION_STACKS PULUMI_BACKEND_URL VAULT_ADDR VAULT_TOKEN; do
  if [[ -z "${!variable:-}" ]]; then
    echo "::error::$variable is not set: the workflow must export it (see ci/fleet.sh)" >&2
    exit 2
  fi
done
read -r -a stacks <<< "$PGCREDS_APPLICATION_STACKS"
for stack in "${stacks[@]}"; do
  if [[ ! "$stack" =~ ^[a-z][a-z0-9-]{0,40}$ ]]; then
    echo "::error::PGCREDS_APPLICATION_STACKS holds '$stack', which is not a stack name (lower-case letters, digits, -)" >&2
    exit 2
  fi
done
parallel=${PGCREDS_PARALLEL:-4}
[[ "$parallel" =~ ^[1-9][0-9]?$ ]] || { echo "::error::PGCREDS_PARALLEL '$parallel' is not a number from 1 to 99" >&2; exit 2; }
export PGCREDS_PROJECT=${PGCREDS_PROJECT:-$PGCREDS_REPO}
# (the job's session folder, each application's session in it, and its end: ci/job.sh)
source "$PGCREDS_REPO/ci/job.sh"
cd "$PGCREDS_REPO"
venv/bin/python -m deployer.fleet "$action" "${stacks[@]}" --parallel "$parallel" --ci --cwd "$PGCREDS_PROJECT"
