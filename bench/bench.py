"""Timings of the dev stack's lifecycle and of credential issuance.

Prints figures (median of N runs) and asserts nothing: these machines are
shared and noisy. Run with `make bench`; it uses a stack named `bench` so the
dev stack is left alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import hvac

REPO = Path(__file__).resolve().parents[1]


def pulumi(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run(["pulumi", *args, "--stack", "bench", "--non-interactive"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--credentials", type=int, default=50)
    args = parser.parse_args()

    shutil.copy(REPO / "Pulumi.dev.yaml", REPO / "Pulumi.bench.yaml")
    subprocess.run(["pulumi", "stack", "select", "--create", "bench"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["pulumi", "config", "set", "--stack", "bench", "pgcreds:vaultMountPath", "bench-database"],
                   cwd=REPO, check=True)
    subprocess.run(["pulumi", "config", "set", "--stack", "bench", "pgcreds:environment", "dev"], cwd=REPO, check=True)
    # Its own role names, so the dev stack may stay deployed meanwhile.
    subprocess.run(["pulumi", "config", "set", "--stack", "bench", "--path", "pgcreds:roles[0].name", "bench-readwrite"],
                   cwd=REPO, check=True)
    for key, value in (("tableOwnerRole", "bench_owner"), ("vaultAdminRole", "bench_vault_admin"),
                       ("postgresDatabase", "bench")):
        subprocess.run(["pulumi", "config", "set", "--stack", "bench", f"pgcreds:{key}", value], cwd=REPO, check=True)
    subprocess.run(["psql", "-q", "-c", "DROP DATABASE IF EXISTS bench WITH (FORCE)", "-c", "CREATE DATABASE bench"],
                   env={**os.environ, "PGPASSWORD": os.environ["PGCREDS_POSTGRES_ADMIN_PASSWORD"]}, check=True)
    try:
        pulumi("destroy", "--yes", "--skip-preview")
        timings: dict[str, list[float]] = {"cold pulumi up": [], "no-op pulumi preview": [], "pulumi destroy": []}
        issue_ms: list[float] = []
        revoke_s: list[float] = []
        vault = hvac.Client(url=os.environ["VAULT_ADDR"], token=os.environ["VAULT_TOKEN"])
        for _ in range(args.runs):
            timings["cold pulumi up"].append(pulumi("up", "--yes", "--skip-preview"))
            timings["no-op pulumi preview"].append(pulumi("preview"))
            for _ in range(args.credentials):
                started = time.perf_counter()
                vault.secrets.database.generate_credentials("bench-readwrite", mount_point="bench-database")
                issue_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            vault.sys.revoke_prefix("bench-database/creds/bench-readwrite")
            revoke_s.append(time.perf_counter() - started)
            timings["pulumi destroy"].append(pulumi("destroy", "--yes", "--skip-preview"))
        print(f"{'measure':<34} {'median':>9} {'runs'}")
        for name, values in timings.items():
            print(f"{name:<34} {statistics.median(values):>8.2f}s  {', '.join(f'{v:.2f}' for v in values)}")
        print(f"{'issue one credential':<34} {statistics.median(issue_ms):>7.1f}ms  "
              f"({len(issue_ms)} credentials, p90 {statistics.quantiles(issue_ms, n=10)[-1]:.1f}ms)")
        print(f"{f'revoke {args.credentials} leases by prefix':<34} {statistics.median(revoke_s):>8.2f}s  "
              f"{', '.join(f'{v:.2f}' for v in revoke_s)}")
    finally:
        subprocess.run(["pulumi", "stack", "rm", "--yes", "--force", "bench"], cwd=REPO, stdout=subprocess.DEVNULL)
        (REPO / "Pulumi.bench.yaml").unlink(missing_ok=True)
        subprocess.run(["psql", "-q", "-c", "DROP DATABASE IF EXISTS bench WITH (FORCE)"],
                       env={**os.environ, "PGPASSWORD": os.environ["PGCREDS_POSTGRES_ADMIN_PASSWORD"]})


if __name__ == "__main__":
    main()
