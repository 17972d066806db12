# Sourced by ci/common.sh (one stack) and ci/fleet.sh (many): what every workflow
# job sets up before Pulumi runs, and the clean-up when it ends. Needs PGCREDS_REPO.
# The language host runs `uv` from the virtualenv (make venv), and the stacks'
# secrets are decrypted by Vault transit: never a passphrase.
export PATH="$PGCREDS_REPO/venv/bin:$PATH"
export PULUMI_SKIP_UPDATE_CHECK=true
# A stack file without this machine's `encryptedkey` uses the one the state holds.
export PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER=true
# The job's own session folder (the runner's temp folder, else /tmp), removed when
# the job ends however it ends: on a self-hosted runner the next job must not find
# the pgpass file. The job's Vault token is revoked with it, and the state login
# (a lease of that token) dies with it.
pgcreds_runner_temp=${PGCREDS_SESSION_DIR:-${RUNNER_TEMP:-${TMPDIR:-/tmp}}}
mkdir -p -m 700 "$pgcreds_runner_temp"
PGCREDS_SESSION_DIR=$(mktemp -d "$pgcreds_runner_temp/pgcreds-job-XXXXXXXX")
export PGCREDS_SESSION_DIR
pgcreds_end_job() {
  local code=$?
  trap - EXIT INT TERM HUP
  rm -rf "$PGCREDS_SESSION_DIR"
  # (the run's Aiven token, from the environment, is revoked with the Vault token)
  [[ -n "${PGCREDS_KEEP_TOKEN:-}" ]] || (cd "$PGCREDS_REPO" && venv/bin/python -m deployer.session --end) || true
  exit "$code"
}
# (the scripts that source this file set no trap of their own: it would replace this one)
trap pgcreds_end_job EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
