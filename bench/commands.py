"""What every bench script runs: a timed command, a statement as the superuser, and
the engine's own log (`--logtostderr -v=N`) read as (seconds, message)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from sourced_env import superuser_password


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Runs `command`; its wall time in seconds. A failure stops the bench with the command's output."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode:
        # The reasons first (Pulumi prints them before a long traceback), then the ends of both streams.
        reasons = "\n".join(line for line in done.stdout.splitlines() if "error:" in line)[:3000]
        kept = Path(tempfile.gettempdir()) / f"pgcreds-bench-failed-{os.getpid()}.log"
        kept.write_text(done.stdout + "\n" + done.stderr)
        raise RuntimeError(
            f"{' '.join(command)} failed (whole output: {kept}):\n{reasons}\n...\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
    return time.perf_counter() - started


def psql(statement: str, database: str = "postgres") -> None:
    """One statement as the local server's superuser."""
    subprocess.run(
        ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", database, "-c", statement],
        check=True,
        env={**os.environ, "PGPASSWORD": superuser_password()},
        stdout=subprocess.DEVNULL,
    )


def engine_log(stderr: str) -> Iterator[tuple[float, str]]:
    """The engine's log lines (one JSON object a line) as (Unix time, message)."""
    for line in stderr.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        stamp = entry.get("time", "")[:26].rstrip("Z")  # nanoseconds cut to what Python reads
        yield datetime.fromisoformat(stamp).timestamp(), entry.get("msg", "")
