#!/usr/bin/env bash
# What preview.yml runs for one stack on a pull request: the access changes in
# plain words (review/access.py), then `pulumi preview --diff --refresh` with the
# policy pack enforced, as the read-only identity (the state login may only
# SELECT; the Vault token can only read). Both go to the log and, as the pull
# request's comment, to $PGCREDS_COMMENT_FILE (default preview-<stack>.md).
# Exits as the preview did.
comment=${PGCREDS_COMMENT_FILE:-preview-$PGCREDS_STACK.md}
# A stack in aiven mode is not previewed on a pull request: Aiven gives whoever may
# read the service its admin's password, and the pull request's code would hold
# that token (docs/aiven.md). An operator previews it instead.
if grep -Eq '^ *"?pgcreds:postgresMode"?: *"?aiven"?,? *$' "${PGCREDS_PROJECT:-$(dirname "$0")/..}/Pulumi.${PGCREDS_STACK:-}.yaml" 2>/dev/null ||
   [[ "${PGCREDS_AIVEN:-}" == true ]]; then
  reason="stack \`${PGCREDS_STACK:-}\` is in aiven mode: a pull request's preview gets no Aiven token (one that may read the service may read its admin's password), so an operator previews it (docs/aiven.md)"
  echo "::warning::not previewed: $reason"
  echo "#### \`pulumi preview\` of stack \`${PGCREDS_STACK:-}\`: not run. The $reason." > "$comment"
  exit 0
fi
source "$(dirname "$0")/common.sh" --read-only
# In the job's session folder, which common.sh removes when the job ends (a trap
# of this script's own would replace that one).
log="$PGCREDS_SESSION_DIR/preview.log"
access="$PGCREDS_SESSION_DIR/access.md"
set +e
# First, for the reviewer: who gains and loses access, in plain words (review/access.py:
# the stack file against what is deployed; a refused setting with the program's reason).
(cd "$PGCREDS_REPO" && venv/bin/python -m review.access --stack "$PGCREDS_STACK" --cwd "$PGCREDS_PROJECT" --changes) \
  > "$access" 2> "$access.err"
access_code=$?
[[ $access_code -le 1 ]] || { echo "#### Access changes on stack \`$PGCREDS_STACK\`: not worked out ($(tail -n 1 "$access.err"))"; } > "$access"
cat "$access"
pulumi_stack preview --diff --refresh --policy-pack "$PGCREDS_REPO/policy" 2>&1 | tee "$log"
code=${PIPESTATUS[0]}
set -e
{
  cat "$access"
  echo
  echo "#### \`pulumi preview\` of stack \`$PGCREDS_STACK\`: $([[ $code == 0 ]] && echo passed || echo "FAILED (exit $code)")"
  echo
  echo '<details><summary>diff, with the policy pack enforced</summary>'
  echo
  echo '```diff'
  # A comment holds at most 65536 characters: the end of the output matters most.
  tail -c 60000 "$log"
  echo '```'
  echo '</details>'
} > "$comment"
exit "$code"
