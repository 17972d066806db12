"""A deploy session whose logins died is not reused (issue "No single mistake
wedges a stack", class 4), and a PGPASSWORD in the user's shell does not reach
the run (class 11): sourcing local/dev-env.sh again is the way out, and it works."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psycopg

from deployer import DEPLOYER_LOGIN, PLATFORM_MOUNT
from sourced_env import sourced_env
from stacks import REPO, vault


def open_session(folder: Path, **extra: str) -> tuple[dict[str, str], str]:
    """`. local/dev-env.sh` with its own session folder: the environment and what it said."""
    env = {**os.environ, "PGCREDS_SESSION_DIR": str(folder), **extra}
    done = subprocess.run(
        ["bash", "-c", ". local/dev-env.sh >/dev/null && env -0"], cwd=REPO, env=env, capture_output=True, check=True
    )
    values = dict(entry.decode().split("=", 1) for entry in done.stdout.split(b"\0") if b"=" in entry)
    return values, done.stderr.decode()


def state_user(env: dict[str, str]) -> str:
    return env["PULUMI_BACKEND_URL"].split("//", 1)[1].split("@", 1)[0]


def logs_in(env: dict[str, str]) -> bool:
    """Both of the session's logins work, as the CLI and the providers use them."""
    try:
        subprocess.run(
            ["psql", "-w", "-At", env["PULUMI_BACKEND_URL"], "-c", "SELECT 1"], env=env, check=True, capture_output=True
        )
        psycopg.connect(
            host="127.0.0.1",
            port=int(env["PGPORT"]),
            dbname="postgres",
            user=env["PGUSER"],
            passfile=env["PGPASSFILE"],
            connect_timeout=10,
        ).close()
        return True
    except (subprocess.CalledProcessError, psycopg.OperationalError):
        return False


def test_a_session_whose_state_lease_was_revoked_is_replaced(tmp_path: Path):
    env, _ = open_session(tmp_path)
    assert logs_in(env)
    first = state_user(env)
    vault().sys.revoke_prefix(f"{PLATFORM_MOUNT}/creds/state-write")  # every state login drops
    assert not logs_in(env)
    env, said = open_session(tmp_path)
    assert f"the cached logins no longer work (PostgreSQL refused the login {first})" in said
    assert state_user(env) != first and logs_in(env)


def test_a_session_whose_deployer_password_was_rotated_by_hand_is_replaced(tmp_path: Path):
    env, _ = open_session(tmp_path)
    vault().write(f"{PLATFORM_MOUNT}/rotate-role/deployer")
    assert not logs_in(env)
    env, said = open_session(tmp_path)
    assert f"PostgreSQL refused the login {DEPLOYER_LOGIN}" in said and logs_in(env)
    # The test process's own session has the old password too: it renews the same way.
    os.environ.update(sourced_env("local/dev-env.sh"))


def test_a_live_session_is_reused(tmp_path: Path):
    env, _ = open_session(tmp_path)
    again, said = open_session(tmp_path)
    assert state_user(again) == state_user(env) and "no longer work" not in said


def test_a_pgpassword_in_the_shell_is_unset_by_the_session(tmp_path: Path):
    env, said = open_session(tmp_path, PGPASSWORD="from-my-bashrc")
    assert "PGPASSWORD" not in env and "PGPASSWORD was set in this shell; it is unset" in said
    assert logs_in(env)
    # And a run that gets one anyway is refused before anything, with the reason.
    check = subprocess.run(
        [
            str(REPO / "venv/bin/python"),
            "-c",
            "import os, settings; settings.parse_settings({'vaultAddress': 'https://127.0.0.1:1'}, lambda k: None, "
            "os.environ, 'dev')",
        ],
        cwd=REPO,
        env={**env, "PGPASSWORD": "from-my-bashrc"},
        capture_output=True,
        text=True,
    )
    assert check.returncode != 0 and "PGPASSWORD is set beside the deploy session's PGPASSFILE" in check.stderr
