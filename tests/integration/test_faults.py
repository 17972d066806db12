"""Faults during and between `pulumi up`, with the real engine against the
production-shaped local OpenBao (raft, TLS, audit) and PostgreSQL. Each test
ends with nothing lost: the tables and rows are intact, no temporary user is
left behind, and state and reality agree (`preview --refresh` shows no change).

These stop, seal and restart the shared local servers, and always leave them
running and unsealed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pulumi import automation as auto

from local.recover_stack import leftover_plugins
from stacks import REPO, ProgramStack, admin_connect, vault


def server(script: str, command: str) -> None:
    subprocess.run([str(REPO / "local" / script), command], check=True, capture_output=True, timeout=120)


@pytest.fixture
def servers_restored() -> Iterator[None]:
    """Whatever a test did to the servers, they run (and OpenBao is unsealed) after it."""
    yield
    server("postgres.sh", "start")
    server("vault-server.sh", "start")


def user_exists(name: str) -> bool:
    with admin_connect() as admin:
        return bool(admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone())


def sample_rows(stack: ProgramStack) -> int:
    with admin_connect(stack.database) as admin:
        return admin.execute("SELECT count(*) FROM weekly_metrics_reporting").fetchone()[0]


def assert_converged(stack: ProgramStack) -> None:
    """State and reality agree, and a credential issues, works and is revoked."""
    preview = stack.stack.preview(refresh=True)
    assert set(preview.change_summary) == {"same"}, preview.change_summary
    report = stack.smoke_check()
    assert report.passed, report.table()


def run_up(stack: ProgramStack, stop_when: str, action) -> tuple[int, str]:
    """`pulumi up` as a process of its own; for each line of its output that
    contains `stop_when`, `action(process)` runs until it returns True. Returns
    the exit code and the output."""
    process = subprocess.Popen(
        ["pulumi", "up", "--yes", "--skip-preview", "--stack", stack.stack.name],
        cwd=stack.project_dir,
        env={**os.environ, **stack.stack.workspace.env_vars},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output, acted = [], False
    for line in process.stdout:
        output.append(line)
        if not acted and stop_when in line:
            acted = bool(action(process))
    return process.wait(timeout=300), "".join(output)


@pytest.mark.both_servers
def test_a_vault_server_restart_between_up_and_issue_keeps_leases_revocable(
    deployed_stack: ProgramStack, servers_restored
):
    client = vault()
    leases = [
        client.secrets.database.generate_credentials(deployed_stack.role_name, mount_point=deployed_stack.mount)
        for _ in range(3)
    ]
    started = time.monotonic()
    server("vault-server.sh", "restart")
    print(f"\nOpenBao restart (stop, start, unseal): {time.monotonic() - started:.1f} s")
    client = vault()
    for lease in leases:  # raft storage: the leases survived the restart
        assert client.sys.read_lease(lease["lease_id"])["data"]["id"] == lease["lease_id"]
    fresh = client.secrets.database.generate_credentials(deployed_stack.role_name, mount_point=deployed_stack.mount)
    for lease in [*leases, fresh]:
        client.sys.revoke_lease(lease["lease_id"])
        assert not user_exists(lease["data"]["username"])
    assert_converged(deployed_stack)


@pytest.mark.both_servers
def test_a_sealed_vault_server_fails_the_preview_fast_and_it_converges_once_unsealed(
    deployed_stack: ProgramStack, servers_restored
):
    rows = sample_rows(deployed_stack)
    server("vault-server.sh", "seal")
    started = time.monotonic()
    with pytest.raises(auto.CommandError) as failed:
        deployed_stack.stack.preview()
    took = time.monotonic() - started
    # The stack's secrets are Vault transit's: the CLI stops before the program runs,
    # naming the key and the seal (the program's own check stays for a stack whose
    # secrets are in another Vault).
    assert "transit/decrypt/pgcreds-tests" in str(failed.value) and "Vault is sealed" in str(failed.value)
    started = time.monotonic()
    with pytest.raises(auto.CommandError) as refreshed:
        deployed_stack.stack.preview(refresh=True)
    took_refresh = time.monotonic() - started
    assert "Vault is sealed" in str(refreshed.value)
    print(f"\npreview against a sealed OpenBao failed after {took:.1f} s (with --refresh: {took_refresh:.1f} s)")
    server("vault-server.sh", "unseal")
    assert_converged(deployed_stack)
    assert sample_rows(deployed_stack) == rows


def test_postgres_stopped_during_up_is_named_and_the_next_up_converges(new_stack: ProgramStack, servers_restored):
    def stop_postgres(_process) -> bool:
        server("postgres.sh", "stop")
        return True

    code, output = run_up(new_stack, "postgresql:index:Role", stop_postgres)
    assert code != 0
    # Depending on the moment: our own message or the provider's ("error connecting to
    # PostgreSQL server 127.0.0.1 …"), or, for a statement cut off, the provider's
    # "pq: terminating connection due to administrator command (57P01)" under the
    # postgresql resource that failed.
    diagnostics = output[output.index("Diagnostics:") :]
    assert re.search(r"PostgreSQL|postgresql:index:\w+ \(", diagnostics), diagnostics[-3000:]
    print("\n`pulumi up` with PostgreSQL stopped half-way says:\n" + diagnostics[:1200])
    server("postgres.sh", "start")
    new_stack.stack.up()
    assert_converged(new_stack)
    assert sample_rows(new_stack) == 3
    with admin_connect() as admin:  # one of each, no duplicates
        roles = [
            name
            for (name,) in admin.execute(
                "SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (f"%{new_stack.suffix}%",)
            )
        ]
    assert len(roles) == len(set(roles)) == 3, roles  # owner, Vault's login, the group


def test_up_killed_half_way_then_make_up_converges(new_stack: ProgramStack, servers_restored):
    created = []

    def kill_after_a_dozen(process) -> bool:
        created.append(1)
        if len(created) < 12:
            return False
        os.killpg(process.pid, signal.SIGKILL)
        return True

    code, output = run_up(new_stack, " created", kill_after_a_dozen)
    assert code == -signal.SIGKILL, output[-2000:]
    locks = list(new_stack.state_dir.rglob(".pulumi/locks/**/*.json"))
    assert locks, "a killed pulumi leaves its lock behind"
    left = leftover_plugins(new_stack.project_dir)
    print(f"\nplugin processes left running by the killed `up`: {len(left)}")

    # What an operator runs next: `make up`, unchanged, on this stack.
    make = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "up",
            f"STACK={new_stack.stack.name}",
            f"PROJECT={new_stack.project_dir}",
            f"SMOKE_ROLE={new_stack.role_name}",
        ],
        cwd=REPO,
        env={**os.environ, **new_stack.stack.workspace.env_vars},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert make.returncode == 0, make.stdout[-3000:] + make.stderr[-3000:]
    assert "no longer runs; clearing the lock" in make.stderr
    # Issue 19, class 6: what the killed run left running is ended (the run's own ones end with it).
    assert not [pid for pid in left if Path(f"/proc/{pid}").exists()], make.stderr[-2000:]
    assert not leftover_plugins(new_stack.project_dir)
    if left:
        assert "plugin process(es) the interrupted run left running" in make.stderr
    print(
        "\n`make up` after the kill:\n"
        + "\n".join(line for line in make.stderr.splitlines() if "recover_stack" in line)
    )
    assert "smoke check: PASSED" in make.stdout
    assert not list(new_stack.state_dir.rglob(".pulumi/locks/**/*.json"))
    deployment = new_stack.stack.export_stack().deployment
    assert not deployment.get("pending_operations")
    urns = [r["urn"] for r in deployment["resources"]]
    assert len(urns) == len(set(urns))
    assert_converged(new_stack)
    assert sample_rows(new_stack) == 3


def test_the_audit_log_holds_issue_and_revoke_and_no_password_in_clear(deployed_stack: ProgramStack):
    audit_log = Path(os.environ["PGCREDS_BAO_AUDIT_LOG"])
    start = audit_log.stat().st_size
    client = vault()
    secret = client.secrets.database.generate_credentials(deployed_stack.role_name, mount_point=deployed_stack.mount)
    client.sys.revoke_lease(secret["lease_id"])
    entries = [json.loads(line) for line in audit_log.read_bytes()[start:].decode().splitlines() if line.strip()]
    paths = [(e["type"], e["request"]["path"]) for e in entries]
    creds = f"{deployed_stack.mount}/creds/{deployed_stack.role_name}"
    assert ("request", creds) in paths and ("response", creds) in paths
    assert ("request", "sys/leases/revoke") in paths
    issued = next(e for e in entries if e["type"] == "response" and e["request"]["path"] == creds)
    # Vault HMACs secrets in the log: the password is there only as hmac-sha256:…
    assert issued["response"]["data"]["password"].startswith("hmac-sha256:")
    raw = audit_log.read_text()
    assert secret["data"]["password"] not in raw and os.environ["VAULT_TOKEN"] not in raw
    assert deployed_stack.vault_admin_password() not in raw
