"""Only Vault knows the admin password (rotate-root), and break-glass: `make revoke`
and `locked` roles. The real engine against OpenBao and PostgreSQL."""

from __future__ import annotations

import os
import subprocess

import hvac.exceptions
import psycopg
import pytest

from stacks import REPO, ProgramStack, admin_connect, vault


def other_role(stack: ProgramStack, **fields) -> dict:
    return {"name": f"r{stack.suffix}-read", "tables": ["weekly_metrics_reporting"], "access": "read", **fields}


def connect(stack: ProgramStack, user: str, password: str) -> psycopg.Connection:
    return psycopg.connect(
        host="127.0.0.1",
        port=int(os.environ["PGPORT"]),
        dbname=stack.database,
        user=user,
        password=password,
        autocommit=True,
        connect_timeout=5,
    )


def issue_and_use(stack: ProgramStack, role: str) -> str:
    """A credential of `role` that logs in and reads the metrics table; its user name."""
    secret = vault().secrets.database.generate_credentials(role, mount_point=stack.mount)
    with connect(stack, secret["data"]["username"], secret["data"]["password"]) as session:
        session.execute("SELECT count(*) FROM weekly_metrics_reporting").fetchone()
    return secret["data"]["username"]


def existing_roles(names: list[str]) -> set[str]:
    with admin_connect() as admin:
        return {r for (r,) in admin.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (names,))}


def make_revoke(stack: ProgramStack, role: str) -> subprocess.CompletedProcess:
    """`make revoke` as an operator runs it, on this test stack's backend."""
    return subprocess.run(
        ["make", "--no-print-directory", "revoke", f"ROLE={role}", f"STACK={stack.stack.name}"],
        cwd=REPO,
        env={**os.environ, **stack.stack.workspace.env_vars},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.both_servers
def test_rotate_root_the_state_password_no_longer_logs_in_and_later_updates_keep_issuing(new_stack: ProgramStack):
    new_stack.stack.up()
    (login,) = new_stack.vault_logins()
    assert login.startswith(f"it_{new_stack.suffix}_vault_admin_")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(new_stack, login, new_stack.vault_admin_password())
    issue_and_use(new_stack, new_stack.role_name)

    # A role added by config only: the connection's allowed_roles change; the
    # write-only password is not sent again, so Vault keeps its own.
    new_stack.set(roles=new_stack.roles_config() + [other_role(new_stack)])
    new_stack.stack.up()
    for role in (new_stack.role_name, f"r{new_stack.suffix}-read"):
        issue_and_use(new_stack, role)
    # A TLS setting: the connection URL changes, the password still is not sent.
    new_stack.set(postgresSslMode="prefer")
    result = new_stack.stack.up()
    assert result.summary.resource_changes.get("update", 0) >= 1
    for role in (new_stack.role_name, f"r{new_stack.suffix}-read"):
        issue_and_use(new_stack, role)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(new_stack, login, new_stack.vault_admin_password())
    preview = new_stack.stack.preview(refresh=True)
    assert set(preview.change_summary) == {"same"}, preview.change_summary

    new_stack.stack.destroy()
    assert not existing_roles([login, *new_stack.program_roles])
    assert f"{new_stack.mount}/" not in vault().sys.list_mounted_secrets_engines()["data"]


def test_a_new_mount_path_gets_a_new_login_and_the_old_leases_are_still_revoked(new_stack: ProgramStack):
    new_stack.stack.up()
    (old_login,) = new_stack.vault_logins()
    old_user = issue_and_use(new_stack, new_stack.role_name)
    new_stack.set(vaultMountPath=f"{new_stack.mount}-b")
    new_stack.stack.up()
    (new_login,) = new_stack.vault_logins()
    assert new_login != old_login
    # The old engine's lease was revoked through the old connection and login,
    # which still worked, before the old login was dropped.
    assert not existing_roles([old_user, old_login])
    secret = vault().secrets.database.generate_credentials(new_stack.role_name, mount_point=f"{new_stack.mount}-b")
    assert existing_roles([secret["data"]["username"]])
    new_stack.stack.destroy()
    assert not existing_roles([secret["data"]["username"], new_login])


@pytest.mark.both_servers
def test_break_glass_revoke_one_role_then_lock_and_unlock_it(new_stack: ProgramStack):
    reader = f"r{new_stack.suffix}-read"
    new_stack.set(roles=new_stack.roles_config() + [other_role(new_stack)])
    new_stack.stack.up()
    client = vault()
    leases = [
        client.secrets.database.generate_credentials(new_stack.role_name, mount_point=new_stack.mount)
        for _ in range(10)
    ]
    users = [lease["data"]["username"] for lease in leases]
    sessions = [connect(new_stack, lease["data"]["username"], lease["data"]["password"]) for lease in leases[:2]]
    kept = [issue_and_use(new_stack, reader) for _ in range(2)]

    revoked = make_revoke(new_stack, new_stack.role_name)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked 10 of 10 leases" in revoked.stdout and "0 left" in revoked.stdout
    assert not existing_roles(users)
    for session in sessions:
        with pytest.raises(psycopg.OperationalError):
            session.execute("SELECT 1")
        session.close()
    assert existing_roles(kept) == set(kept)  # the other role's leases are untouched

    unknown = make_revoke(new_stack, "no-such-role")
    assert unknown.returncode != 0 and "ROLE must be one of" in unknown.stderr

    # Locked: the Vault role stays, no new credential is issued; a lease issued
    # before the lock is still revocable (its user is dropped).
    outstanding = client.secrets.database.generate_credentials(new_stack.role_name, mount_point=new_stack.mount)
    new_stack.set(roles=new_stack.roles_config(locked=True) + [other_role(new_stack)])
    result = new_stack.stack.up()
    assert result.summary.resource_changes.get("delete", 0) == 0
    assert new_stack.outputs()["lockedRoles"] == [new_stack.role_name]
    with pytest.raises(hvac.exceptions.VaultError, match="is not an allowed role"):
        client.secrets.database.generate_credentials(new_stack.role_name, mount_point=new_stack.mount)
    issue_and_use(new_stack, reader)
    client.sys.revoke_lease(outstanding["lease_id"])
    assert not existing_roles([outstanding["data"]["username"]])

    new_stack.set(roles=new_stack.roles_config() + [other_role(new_stack)])
    new_stack.stack.up()
    issue_and_use(new_stack, new_stack.role_name)

    everything = make_revoke(new_stack, "all")
    assert everything.returncode == 0, everything.stderr
    assert "0 left" in everything.stdout
    assert not existing_roles(kept)
    new_stack.stack.destroy()
