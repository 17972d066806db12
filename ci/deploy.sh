#!/usr/bin/env bash
# What deploy.yml runs for one stack on a merge to main: `pulumi up --refresh`
# with the policy pack enforced, as the deploy identity. The stack is created on
# its first deploy, with its secrets encrypted by its transit key. Two runs on
# one stack never overlap: the state backend's lock refuses the second.
source "$(dirname "$0")/common.sh"
pulumi_stack stack select --create --secrets-provider "$PGCREDS_SECRETS_PROVIDER"
pulumi_stack up --yes --skip-preview --diff --refresh --policy-pack "$PGCREDS_REPO/policy"
# A stack in aiven mode: the up may have read the service admin's current password
# into the state (Aiven returns it with the service); unless the stack still deploys
# as that admin (a first-day stack), Aiven resets it, so the state's copy opens
# nothing (deployer/aiven_service.py).
if [[ "$PGCREDS_AIVEN" == true ]]; then
  (cd "$PGCREDS_REPO" && venv/bin/python -m deployer.aiven_service --stack "$PGCREDS_STACK" \
     --project-dir "$PGCREDS_PROJECT")
fi
