# Sourced by the workflow scripts (ci/*.sh): the environment a workflow job
# gives them, checked, and a deploy session opened. Exactly these variables come
# from the workflow; nothing else is read:
#   PGCREDS_STACK        the stack (a matrix entry)
#   PULUMI_BACKEND_URL   postgres://host:port/pulumi_state?sslmode=verify-full… (a repository variable; no credentials)
#   VAULT_ADDR           Vault's address (a repository variable); VAULT_CACERT if its CA is private
#   VAULT_TOKEN          the short-lived token of the job's jwt login (hashicorp/vault-action, method jwt)
#   PGCREDS_PROJECT      optional: the program's folder (default: the checkout)
#   PGCREDS_APPLICATION  optional: an application stack's pgcreds:application (default: its stack
#                        file's); the job then deploys as that application's own login (pgcreds_deploy_<application>)
#   PGCREDS_AIVEN        optional: true for a stack in aiven mode (default: its stack file's postgresMode)
# Usage: source ci/common.sh [--read-only]
set -euo pipefail
PGCREDS_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for variable in PGCREDS_STACK PULUMI_BACKEND_URL VAULT_ADDR VAULT_TOKEN; do
  if [[ -z "${!variable:-}" ]]; then
    echo "::error::$variable is not set: the workflow must export it (see ci/common.sh)" >&2
    exit 2
  fi
done
if [[ ! "$PGCREDS_STACK" =~ ^[a-z][a-z0-9-]{0,40}$ ]]; then
  echo "::error::PGCREDS_STACK '$PGCREDS_STACK' is not a stack name (lower-case letters, digits, -)" >&2
  exit 2
fi
export PGCREDS_PROJECT=${PGCREDS_PROJECT:-$PGCREDS_REPO}
# An application stack deploys as its application's own login: its pgcreds:application,
# from its stack file unless the workflow says.
if [[ -z "${PGCREDS_APPLICATION:-}" && -f "$PGCREDS_PROJECT/Pulumi.$PGCREDS_STACK.yaml" ]]; then
  PGCREDS_APPLICATION=$(sed -n 's/^ *pgcreds:application: *"\{0,1\}\([a-z0-9]*\)"\{0,1\} *$/\1/p' \
    "$PGCREDS_PROJECT/Pulumi.$PGCREDS_STACK.yaml" | head -n 1)
fi
export PGCREDS_APPLICATION=${PGCREDS_APPLICATION:-}
# A stack in aiven mode: its deploy session mints the run's Aiven API token from the
# long-lived one in Vault (never a repository secret), and revokes it at the job's end.
if [[ -z "${PGCREDS_AIVEN:-}" && -f "$PGCREDS_PROJECT/Pulumi.$PGCREDS_STACK.yaml" ]] &&
   grep -Eq '^ *"?pgcreds:postgresMode"?: *"?aiven"?,? *$' "$PGCREDS_PROJECT/Pulumi.$PGCREDS_STACK.yaml"; then
  PGCREDS_AIVEN=true
fi
export PGCREDS_AIVEN=${PGCREDS_AIVEN:-false}
# The language host runs `uv` from the virtualenv (make venv), and the stack's
# secrets are decrypted by Vault transit: never a passphrase.
export PATH="$PGCREDS_REPO/venv/bin:$PATH"
export PULUMI_SKIP_UPDATE_CHECK=true
# A stack file without this machine's `encryptedkey` uses the one the state holds.
export PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER=true
PGCREDS_SECRETS_PROVIDER="hashivault://pgcreds-$PGCREDS_STACK"
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
# The state login and the program's PostgreSQL login, from Vault, in a private
# pgpass file. A session that cannot be opened stops the job with its reason:
# Pulumi must never run as whoever the runner's environment happens to name.
if ! pgcreds_session=$(cd "$PGCREDS_REPO" && venv/bin/python -m deployer.session "$@"); then
  echo "::error::the deploy session could not be opened (its reason is above); nothing was run" >&2
  exit 3
fi
eval "$pgcreds_session"
unset pgcreds_session
pulumi_stack() { pulumi --cwd "$PGCREDS_PROJECT" --stack "$PGCREDS_STACK" --non-interactive "$@"; }
