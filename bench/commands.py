"""What every bench script runs: a timed command, and a statement as the superuser."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from sourced_env import superuser_password


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Runs `command`; its wall time in seconds. A failure stops the bench with the command's output."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def psql(statement: str, database: str = "postgres") -> None:
    """One statement as the local server's superuser."""
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", database, "-c", statement],
                   check=True, env={**os.environ, "PGPASSWORD": superuser_password()}, stdout=subprocess.DEVNULL)
