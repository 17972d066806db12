# Source this file to use the pinned toolchain: `. toolchain/env.sh`.
# Builds it on first use (cached outside the repository afterwards), puts it
# first on PATH and makes sure the engine never tries to download anything.
# Where an official `pulumi` CLI with its Python language host is already on
# PATH (and PGCREDS_BUILD_TOOLCHAIN is not 1), that one is used as it is.
_pgcreds_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ "${PGCREDS_BUILD_TOOLCHAIN:-}" != 1 ]] && command -v pulumi >/dev/null && command -v pulumi-language-python >/dev/null \
   && [[ "$(command -v pulumi)" != */pg-dynamic-creds/toolchain/* ]]; then
  : # an official installation
else
  _pgcreds_bin=$("$_pgcreds_repo/toolchain/build.sh") || return 1
  export PATH="$_pgcreds_bin:$PATH"
fi
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK=true
# A local file backend unless the user chose one (CI sets its own).
export PULUMI_BACKEND_URL=${PULUMI_BACKEND_URL:-file://$_pgcreds_repo/.local/pulumi-state}
mkdir -p "$_pgcreds_repo/.local/pulumi-state"
unset _pgcreds_repo _pgcreds_bin
