"""The environment a shell file of the project sets up, for tests to adopt, and
the one way tests make a stack on a file backend of their own."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

from deployer.session import session_exports  # noqa: F401 - the tests' and the bench's name for it

REPO = Path(__file__).resolve().parents[1]
# Every test stack's secrets are encrypted by the local OpenBao's transit key for
# tests (made by local/bootstrap.sh); no test uses a passphrase.
TEST_SECRETS_PROVIDER = "hashivault://pgcreds-tests"
VAULT_VARIABLES = ("VAULT_ADDR", "VAULT_TOKEN", "VAULT_CACERT")


def sourced_env(script: str | Path, unset: tuple[str, ...] = (), extra: dict[str, str] | None = None) -> dict[str, str]:
    """Every variable after `. <script>` (a path relative to the repository, or an
    absolute one) in bash, started without the variables named in `unset` and with `extra`."""
    environment = {key: value for key, value in os.environ.items() if key not in unset} | (extra or {})
    dump = subprocess.run(
        ["bash", "-c", f". '{REPO / script}' >/dev/null 2>&1 && env -0"],
        check=True,
        capture_output=True,
        env=environment,
    ).stdout
    return dict(entry.decode().split("=", 1) for entry in dump.split(b"\0") if b"=" in entry)


@functools.lru_cache(maxsize=1)
def _local_vault() -> dict[str, str]:
    env = sourced_env("local/dev-env.sh")
    return {key: env[key] for key in VAULT_VARIABLES}


def superuser_password() -> str:
    """The local server's superuser password, from its root-only file: the tests' and
    the bench's own set-up and checks need it; no stack of the current program gets it."""
    return Path(os.environ["PGCREDS_SUPERUSER_PASSWORD_FILE"]).read_text().strip()


def file_backend(state: Path) -> dict[str, str]:
    """Environment for a stack whose state is a private folder (mode 0700) and whose
    secrets the local OpenBao encrypts (pass `secrets_provider=TEST_SECRETS_PROVIDER`)."""
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    state.chmod(0o700)
    return {"PULUMI_BACKEND_URL": f"file://{state}", **_local_vault()}
