# Source this file to use the pinned toolchain: `. toolchain/env.sh`.
# Builds it on first use (cached outside the repository afterwards), puts it
# first on PATH, points PULUMI_HOME at the cached plugins and makes sure the
# engine never tries to download anything. (build.sh uses an official
# installation instead, where there is one; without the plugin bundles, plugin
# acquisition is then left to Pulumi.)
_pgcreds_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_pgcreds_result=$("$_pgcreds_repo/toolchain/build.sh") || return 1
_pgcreds_bin=${_pgcreds_result##*$'\n'}
_pgcreds_home=$(sed -n 's/^home=//p' <<<"$_pgcreds_result")
case ":$PATH:" in *":$_pgcreds_bin:"*) ;; *) export PATH="$_pgcreds_bin:$PATH" ;; esac
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK=true
if [[ -n "$_pgcreds_home" ]]; then
  export PULUMI_HOME="$_pgcreds_home"
  export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
fi
# A local file backend unless one was chosen (local/dev-env.sh and CI set their own).
if [[ -z "${PULUMI_BACKEND_URL:-}" ]]; then
  export PULUMI_BACKEND_URL="file://$_pgcreds_repo/.local/pulumi-state"
  mkdir -p "$_pgcreds_repo/.local/pulumi-state" && chmod 700 "$_pgcreds_repo/.local/pulumi-state"  # state is private
fi
unset _pgcreds_repo _pgcreds_result _pgcreds_bin _pgcreds_home
