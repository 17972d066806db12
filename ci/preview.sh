#!/usr/bin/env bash
# What preview.yml runs for one stack on a pull request: `pulumi preview --diff
# --refresh` with the policy pack enforced, as the read-only identity (the state
# login may only SELECT; the Vault token can only read). The diff goes to the
# log and, as the pull request's comment, to $PGCREDS_COMMENT_FILE
# (default preview-<stack>.md). Exits as the preview did.
source "$(dirname "$0")/common.sh" --read-only
comment=${PGCREDS_COMMENT_FILE:-preview-$PGCREDS_STACK.md}
# In the job's session folder, which common.sh removes when the job ends (a trap
# of this script's own would replace that one).
log="$PGCREDS_SESSION_DIR/preview.log"
set +e
pulumi_stack preview --diff --refresh --policy-pack "$PGCREDS_REPO/policy" 2>&1 | tee "$log"
code=${PIPESTATUS[0]}
set -e
{
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
