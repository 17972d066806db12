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
PGCREDS_SECRETS_PROVIDER="hashivault://pgcreds-$PGCREDS_STACK"
source "$PGCREDS_REPO/ci/job.sh"
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
