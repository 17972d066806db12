"""The environment a shell file of the project sets up, for tests to adopt, and
the one way tests make a stack on a file backend of their own."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Every test stack's secrets are encrypted by the local OpenBao's transit key for
# tests (made by local/bootstrap.sh); no test uses a passphrase.
TEST_SECRETS_PROVIDER = "hashivault://pgcreds-tests"
VAULT_VARIABLES = ("VAULT_ADDR", "VAULT_TOKEN", "VAULT_CACERT")


def sourced_env(script: str, unset: tuple[str, ...] = ()) -> dict[str, str]:
    """Every variable after `. <script>` (a path relative to the repository) in bash,
    started without the variables named in `unset`."""
    environment = {key: value for key, value in os.environ.items() if key not in unset}
    dump = subprocess.run(["bash", "-c", f". '{REPO / script}' >/dev/null 2>&1 && env -0"], check=True,
                          capture_output=True, env=environment).stdout
    return dict(entry.decode().split("=", 1) for entry in dump.split(b"\0") if b"=" in entry)


@functools.lru_cache(maxsize=1)
def _local_vault() -> dict[str, str]:
    env = sourced_env("local/dev-env.sh")
    return {key: env[key] for key in VAULT_VARIABLES}


def file_backend(state: Path) -> dict[str, str]:
    """Environment for a stack whose state is a private folder (mode 0700) and whose
    secrets the local OpenBao encrypts (pass `secrets_provider=TEST_SECRETS_PROVIDER`)."""
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    state.chmod(0o700)
    return {"PULUMI_BACKEND_URL": f"file://{state}", **_local_vault()}
