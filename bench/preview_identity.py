"""A no-op `pulumi preview --refresh` of the dev stack as the preview identity
(its read-only state login and the preview's own PostgreSQL login, issued for
the run) against the same preview as the deployer (what previews did before).

Prints figures and asserts nothing (these machines are shared and noisy): each
identity's session is opened once, then the two previews run in turns, N times
each; medians and their ratio. Part of `make bench`; alone:

    . local/dev-env.sh && venv/bin/python bench/preview_identity.py --runs 5

The dev stack is brought up first (a no-op when `make up` ran). The tokens carry
exactly the stack's deploy and preview policies (what the jwt roles give CI).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import hvac

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from clients.tls import vault_tls_verify  # noqa: E402
from commands import timed  # noqa: E402
from sourced_env import session_exports  # noqa: E402

STACK = "dev"


def session_env(token: str, read_only: bool, folder: Path) -> dict[str, str]:
    """The environment of a run with this token's deploy session (or a preview's)."""
    env = {**os.environ, "VAULT_TOKEN": token, "BAO_TOKEN": token, "PGCREDS_SESSION_DIR": str(folder)}
    opened = subprocess.run(
        [sys.executable, "-m", "deployer.session", *(["--read-only"] if read_only else [])],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    env.update(session_exports(opened))
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    operator = hvac.Client(url=os.environ["VAULT_ADDR"], token=os.environ["VAULT_TOKEN"], verify=vault_tls_verify())

    def token(policy: str) -> str:
        return operator.auth.token.create(policies=[policy], ttl="1h")["auth"]["client_token"]

    with tempfile.TemporaryDirectory() as folder:
        deployer = session_env(token(f"pgcreds-deploy-{STACK}"), False, Path(folder) / "deploy")
        preview = session_env(token(f"pgcreds-preview-{STACK}"), True, Path(folder) / "preview")
        subprocess.run(
            ["pulumi", "stack", "select", "--create", STACK, "--secrets-provider", f"hashivault://pgcreds-{STACK}"],
            cwd=REPO,
            env=deployer,
            check=True,
            capture_output=True,
        )
        timed(["pulumi", "up", "--yes", "--skip-preview", "--stack", STACK], REPO, deployer)
        command = ["pulumi", "preview", "--refresh", "--expect-no-changes", "--stack", STACK]
        times: dict[str, list[float]] = {"as the deployer (before)": [], "as the preview identity": []}
        for _ in range(args.runs):
            times["as the deployer (before)"].append(timed(command, REPO, deployer))
            times["as the preview identity"].append(timed(command, REPO, preview))
        for env in (deployer, preview):
            hvac.Client(
                url=os.environ["VAULT_ADDR"], token=env["VAULT_TOKEN"], verify=vault_tls_verify()
            ).auth.token.revoke_self()
    print(f"no-op `pulumi preview --refresh` of the dev stack, medians of {args.runs} runs in turns (s):")
    medians = {label: statistics.median(values) for label, values in times.items()}
    for label, median in medians.items():
        print(f"  {label:<28} {median:6.2f}   ({', '.join(f'{v:.2f}' for v in times[label])})")
    print(
        f"  preview identity / deployer: {medians['as the preview identity'] / medians['as the deployer (before)']:.2f}x"
    )


if __name__ == "__main__":
    main()
