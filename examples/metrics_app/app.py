"""An example service on pgcreds-client: worker threads write a row to
weekly_metrics_reporting and read the table back, in a loop, through one
RotatingPool, while Vault's credentials rotate under them.

    PYTHONPATH=client PGCREDS_ROLE_ID=… PGCREDS_SECRET_ID_FILE=… venv/bin/python examples/metrics_app/app.py --seconds 150

Environment: VAULT_ADDR, or PGCREDS_VAULT_ADDRS (every node of a cluster,
comma-separated: the client moves on when one fails), and VAULT_CACERT; PGCREDS_ROLE_ID, PGCREDS_SECRET_ID or
PGCREDS_SECRET_ID_FILE (read again at each login, so a launcher can replace
it), PGCREDS_CREDS_PATH (database/creds/metrics-readwrite), PGCREDS_LOGIN_PATH
(auth/database-approle/login) and PGCREDS_CONNINFO (host, port, dbname, sslmode:
no user, no password). Prints a JSON summary at the end (`--stats` writes it
to a file too); never a password.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from pgcreds_client import LoginRefused, connect_pool

TABLE = "weekly_metrics_reporting"


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queries = self.failed = 0
        self.rows: list[int] = []
        self.last_success = time.monotonic()
        self.longest_gap = 0.0
        self.errors: list[str] = []
        self.login_refused = ""
        """Vault's refusal of a new login (the service cannot go on without a new secret-id)."""

    def success(self, row: int | None = None) -> None:
        with self.lock:
            now = time.monotonic()
            self.longest_gap = max(self.longest_gap, now - self.last_success)
            self.last_success = now
            self.queries += 1
            if row is not None:
                self.rows.append(row)

    def failure(self, error: Exception) -> None:
        with self.lock:
            self.failed += 1
            if isinstance(error, LoginRefused):
                self.login_refused = str(error)
            self.errors.append(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")


def worker(pool, stats: Stats, number: int, deadline: float, pause: float) -> None:
    sequence = 0
    while time.monotonic() < deadline:
        sequence += 1
        marker = number * 1_000_000 + sequence  # this worker's row, found again by the caller
        try:
            row = pool.run(
                lambda conn, marker=marker: conn.execute(
                    f"INSERT INTO {TABLE} (week_ending, product_downloads, github_stars, twitter_followers) "
                    "VALUES (now(), %s, 0, 0) RETURNING id",
                    (marker,),
                ).fetchone()[0]
            )
            stats.success(row)
            pool.run(lambda conn: conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone())
            stats.success()
        except Exception as error:
            stats.failure(error)
        time.sleep(pause)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between two queries of a worker")
    parser.add_argument("--stats", type=Path, help="also write the JSON summary here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)

    secret_file = os.environ.get("PGCREDS_SECRET_ID_FILE")
    secret_id = (lambda: Path(secret_file).read_text().strip()) if secret_file else os.environ["PGCREDS_SECRET_ID"]
    pool = connect_pool(
        os.environ.get("PGCREDS_VAULT_ADDRS") or os.environ["VAULT_ADDR"],
        os.environ["PGCREDS_ROLE_ID"],
        secret_id,
        os.environ.get("PGCREDS_CREDS_PATH", "database/creds/metrics-readwrite"),
        os.environ.get("PGCREDS_LOGIN_PATH", "auth/database-approle/login"),
        os.environ["PGCREDS_CONNINFO"],
        ca_cert=os.environ.get("VAULT_CACERT"),
        max_size=args.workers,
    )
    stats = Stats()
    deadline = time.monotonic() + args.seconds
    threads = [
        threading.Thread(target=worker, args=(pool, stats, n + 1, deadline, args.pause)) for n in range(args.workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # An outage that lasts to the end counts as well (no later success would measure it).
    longest_gap = max(stats.longest_gap, time.monotonic() - stats.last_success)
    summary = {
        "queries": stats.queries,
        "failed": stats.failed,
        "retried": pool.retried,
        "credentials_read": pool.source.credentials_read,
        "credential_reads_failed": pool.source.read_failures,
        "vault_failovers": pool.source.addresses.failovers,
        "longest_gap_seconds": round(longest_gap, 3),
        "rows": stats.rows,
        "errors": stats.errors[:20],
    }
    pool.close()
    pool.source.close()
    text = json.dumps(summary)
    if args.stats:
        args.stats.write_text(text)
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"} | {"rows_written": len(stats.rows)}))
    if stats.login_refused:
        print(f"metrics_app: what it needs: {stats.login_refused}", file=sys.stderr)
    return 0 if stats.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
