"""Proof under rotation (issue 21): the example service (examples/metrics_app, on
pgcreds-client) runs for 80 s with 4 workers on a role whose credentials last
10 s, at most 30 s, and a break-glass revocation of every lease of the role
comes at second 35. No query fails (those in flight at the revocation are run
again, and counted), the process never holds more than 2 leases, every row it
wrote is there, and every user it was given is dropped by the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import hvac.exceptions
import psycopg

from stacks import REPO, ProgramStack, start_metrics_app, vault

RUN_SECONDS = 80
REVOKE_AT = 35
WORKERS = 4


def live_leases(stack: ProgramStack) -> int:
    try:
        return len(vault().sys.list_leases(prefix=f"{stack.mount}/creds/{stack.role_name}")["data"]["keys"])
    except hvac.exceptions.InvalidPath:
        return 0


def break_glass(stack: ProgramStack) -> None:
    """`make revoke ROLE=<the stack's role>`: every lease of the role revoked."""
    revoke = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "revoke",
            f"ROLE={stack.role_name}",
            f"STACK={stack.stack.name}",
            f"PROJECT={stack.project_dir}",
        ],
        cwd=REPO,
        env={**os.environ, **stack.stack.workspace.env_vars},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert revoke.returncode == 0, revoke.stdout[-2000:] + revoke.stderr[-2000:]


def test_the_example_service_lives_through_rotation_and_break_glass(new_stack: ProgramStack, tmp_path: Path):
    new_stack.set(roles=new_stack.roles_config(defaultTtl="10s", maxTtl="30s", secretIdUses=20))
    new_stack.stack.up()
    paths = new_stack.outputs()["appRoles"][new_stack.role_name]
    operator = vault()
    role_id = operator.read(paths["roleIdPath"])["data"]["role_id"]
    # What the launcher hands over: a secret-id good for 20 logins (one per rotation), in a private file.
    secret_file = tmp_path / "secret-id"
    secret_file.write_text(operator.write_data(paths["secretIdPath"])["data"]["secret_id"])
    secret_file.chmod(0o600)
    stats_file = tmp_path / "stats.json"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "client"),
        "PGCREDS_ROLE_ID": role_id,
        "PGCREDS_SECRET_ID_FILE": str(secret_file),
        "PGCREDS_CREDS_PATH": f"{new_stack.mount}/creds/{new_stack.role_name}",
        "PGCREDS_LOGIN_PATH": paths["loginPath"],
        "PGCREDS_CONNINFO": f"host=127.0.0.1 port={new_stack.server.port} dbname={new_stack.database} sslmode=disable",
    }
    service = start_metrics_app(env, RUN_SECONDS, WORKERS, stats_file)

    most_leases, samples, stop = [0], [], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            count = live_leases(new_stack)
            samples.append(count)
            most_leases[0] = max(most_leases[0], count)
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    time.sleep(REVOKE_AT)
    break_glass(new_stack)
    out, err = service.communicate(timeout=RUN_SECONDS + 120)
    stop.set()
    sampler.join()
    assert service.returncode == 0, out[-2000:] + err[-4000:]
    stats = json.loads(stats_file.read_text())
    # Its log names users and leases, never a secret ("password authentication failed" is PostgreSQL's).
    assert "password=" not in (err + out).lower() and secret_file.read_text() not in err + out
    assert "'password'" not in err + out

    print(
        f"\nrotation proof ({time.monotonic() - started:.0f} s, {WORKERS} workers, leases 10 s / 30 s, "
        f"break-glass at {REVOKE_AT} s): {stats['queries']} queries, {stats['failed']} failed, "
        f"{stats['retried']} run again after the connection was lost, {stats['credentials_read']} credentials "
        f"read, at most {most_leases[0]} live leases, longest gap between two successful queries "
        f"{stats['longest_gap_seconds']} s, {len(stats['rows'])} rows written"
    )
    assert stats["failed"] == 0, stats["errors"]
    assert stats["queries"] > 2000 and len(stats["rows"]) > 1000
    assert most_leases[0] <= 2, samples
    # Rotations every ~20 s and one forced by the revocation: about five credentials in 80 s.
    assert 3 <= stats["credentials_read"] <= 10, stats
    with psycopg.connect(
        host="127.0.0.1",
        port=new_stack.server.port,
        dbname=new_stack.database,
        user="postgres",
        password=new_stack.server.superuser_password_file.read_text().strip(),
        autocommit=True,
    ) as admin:
        found = admin.execute(
            "SELECT count(*) FROM weekly_metrics_reporting WHERE id = ANY(%s)", (stats["rows"],)
        ).fetchone()[0]
        assert found == len(stats["rows"])
        group = new_stack.role_name.replace("-", "_")
        # The service revoked its own lease on the way out; every earlier one ended or was revoked.
        users = admin.execute(
            "SELECT r.rolname FROM pg_roles r JOIN pg_auth_members m ON m.member = r.oid "
            "JOIN pg_roles g ON g.oid = m.roleid WHERE g.rolname = %s AND r.rolcanlogin "
            "AND r.rolvaliduntil < 'infinity' AND r.rolname LIKE 'v-%%'",
            (group,),
        ).fetchall()
        assert users == [], users
    assert live_leases(new_stack) == 0


def test_after_break_glass_a_used_up_secret_id_is_said_once_and_the_outage_is_measured(
    new_stack: ProgramStack, tmp_path: Path
):
    """Issue "No single mistake wedges a stack", class 9: with the default
    secretIdUses (1), the service's one login is spent; after `make revoke` it must
    log in again and cannot. It says what it needs (once, not a loop of "reading a
    new one"), and its longest gap is the outage, not a fraction of a second."""
    new_stack.stack.up()  # the role's defaults: one login per secret-id
    paths = new_stack.outputs()["appRoles"][new_stack.role_name]
    operator = vault()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "client"),
        "PGCREDS_ROLE_ID": operator.read(paths["roleIdPath"])["data"]["role_id"],
        "PGCREDS_SECRET_ID": operator.write_data(paths["secretIdPath"])["data"]["secret_id"],
        "PGCREDS_CREDS_PATH": f"{new_stack.mount}/creds/{new_stack.role_name}",
        "PGCREDS_LOGIN_PATH": paths["loginPath"],
        "PGCREDS_CONNINFO": f"host=127.0.0.1 port={new_stack.server.port} dbname={new_stack.database} sslmode=disable",
    }
    env.pop("PGCREDS_SECRET_ID_FILE", None)
    stats_file, seconds, revoke_at = tmp_path / "stats.json", 14, 4
    service = start_metrics_app(env, seconds, 2, stats_file)
    time.sleep(revoke_at)
    break_glass(new_stack)
    out, err = service.communicate(timeout=seconds + 60)
    assert service.returncode == 1, out + err[-3000:]
    stats = json.loads(stats_file.read_text())
    needs = err.strip().splitlines()[-1]
    assert needs.startswith("metrics_app: what it needs: Vault refused the AppRole login") and "secretIdUses" in needs
    assert err.count("reading a new one") <= 1 and err.count("Vault refused the AppRole login") <= 3, err[-3000:]
    # The outage ran from the revocation to the end: the gap says so.
    assert stats["longest_gap_seconds"] >= seconds - revoke_at - 4, stats
    # The way out it names: a new secret-id; the service runs again, and the stack is as it was.
    env["PGCREDS_SECRET_ID"] = operator.write_data(paths["secretIdPath"])["data"]["secret_id"]
    again = subprocess.run(
        [sys.executable, str(REPO / "examples" / "metrics_app" / "app.py"), "--seconds", "3", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0, again.stdout + again.stderr[-2000:]
    assert set(new_stack.stack.preview(refresh=True).change_summary) == {"same"}
    assert live_leases(new_stack) == 0
