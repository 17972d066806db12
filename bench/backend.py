"""The team backend's cost, lever by lever (issue "The team backend at file speed").

The generated 20-role stack (`gen20`: 20 roles over 40 tables) goes through a cold
`up`, a no-op `preview` and a `destroy` on each variant, in turns (one run of every
variant, then the next round), median of `--runs`:

  file        a file backend in a temporary folder (Vault transit secrets as well)
  team        the state database (`postgres://`), as the CLI writes it by default
  team+zstd   the same with PULUMI_DIY_BACKEND_ZSTD=true (what the deploy session exports)
  team+gzip   PULUMI_DIY_BACKEND_GZIP=true instead
  team+zstd-nobackup  zstd and PULUMI_DIY_BACKEND_DISABLE_CHECKPOINT_BACKUPS=true

For each it also prints the write-ahead log the state server wrote during the
cold `up` (pg_current_wal_lsn before and after: every checkpoint rewrites the
stack's whole row, and copies the previous one to `.bak` first) and the size of
the stack's row. Prints figures, asserts nothing: these machines are noisy.
Run inside a deploy session (`make bench` does).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))
from bench import SHAPES, ProgramRun  # noqa: E402
from sourced_env import superuser_password  # noqa: E402

VARIANTS = {
    "team": {},
    "team+zstd": {"PULUMI_DIY_BACKEND_ZSTD": "true"},
    "team+gzip": {"PULUMI_DIY_BACKEND_GZIP": "true"},
    "team+zstd-nobackup": {"PULUMI_DIY_BACKEND_ZSTD": "true", "PULUMI_DIY_BACKEND_DISABLE_CHECKPOINT_BACKUPS": "true"},
}
# What the deploy session leaves to the CLI's defaults: it must not set them itself here.
SESSION_LEVERS = ("PULUMI_DIY_BACKEND_ZSTD", "PULUMI_DIY_BACKEND_GZIP", "PULUMI_DIY_BACKEND_DISABLE_CHECKPOINT_BACKUPS")


def state_server_query(query: str) -> str:
    """One value from the state database, as its server's superuser."""
    return subprocess.run(
        ["psql", "-qAt", "-U", "postgres", "-d", "pulumi_state", "-c", query],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PGPASSWORD": superuser_password(), "PGUSER": "postgres"},
    ).stdout.strip()


def wal_position() -> str:
    return state_server_query("SELECT pg_current_wal_lsn()")


def wal_bytes_since(position: str) -> int:
    return int(state_server_query(f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{position}')"))


def row_bytes(stack: str) -> int:
    return int(
        state_server_query(
            "SELECT coalesce(sum(octet_length(data::text)), 0) FROM pulumi_state "
            f"WHERE key LIKE '%.pulumi/stacks/%/{stack}.json%' AND key NOT LIKE '%.bak'"
        )
        or 0
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    base = {key: "" for key in SESSION_LEVERS}  # (an empty value is unset for the CLI)
    shape = next(s for s in SHAPES if s.name == "gen20")
    times: dict[str, dict[str, list[float]]] = {}
    wal: dict[str, list[int]] = {}
    rows: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="pgcreds-backend-") as temp:
        for round_ in range(args.runs):
            for variant in ("file", *VARIANTS):
                folder = Path(temp) / f"{variant}-{round_}"
                env = dict(base)
                if variant == "file":
                    (folder / "state").mkdir(parents=True, mode=0o700)
                    env["PULUMI_BACKEND_URL"] = f"file://{folder / 'state'}"
                else:
                    env.update(VARIANTS[variant])
                program = ProgramRun(shape, folder / "run", env=env)
                try:
                    position = wal_position()
                    up = program.pulumi("up", "--yes", "--skip-preview")
                    if variant != "file":
                        wal.setdefault(variant, []).append(wal_bytes_since(position))
                        rows[variant] = row_bytes(program.stack)
                    preview = program.pulumi("preview")
                    destroy = program.pulumi("destroy", "--yes", "--skip-preview")
                finally:
                    program.remove()
                measured = times.setdefault(variant, {"up": [], "preview": [], "destroy": []})
                for operation, seconds in (("up", up), ("preview", preview), ("destroy", destroy)):
                    measured[operation].append(seconds)
                print(
                    f"  round {round_ + 1} {variant:<20} up {up:6.2f}s  preview {preview:5.2f}s  "
                    f"destroy {destroy:6.2f}s",
                    flush=True,
                )
    file_up, file_destroy = (statistics.median(times["file"][op]) for op in ("up", "destroy"))
    print(f"\nthe generated 20-role stack by backend (seconds, median of {args.runs}, in turns):")
    print(
        f"{'backend':<20} {'cold up':>8} {'preview':>8} {'destroy':>8} {'up/file':>8} {'destroy/file':>12} "
        f"{'WAL of up':>10} {'state row':>10}"
    )
    for variant, measured in times.items():
        up, preview, destroy = (statistics.median(measured[op]) for op in ("up", "preview", "destroy"))
        wal_text = f"{statistics.median(wal[variant]) / 2**20:7.1f} MB" if variant in wal else f"{'-':>10}"
        row_text = f"{rows[variant] / 2**10:7.0f} KB" if variant in rows else f"{'-':>10}"
        print(
            f"{variant:<20} {up:>8.2f} {preview:>8.2f} {destroy:>8.2f} {up / file_up:>8.2f} "
            f"{destroy / file_destroy:>12.2f} {wal_text} {row_text}"
        )


if __name__ == "__main__":
    main()
