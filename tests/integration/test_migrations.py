"""The migration role (issue 21): a role with `access: migrate` issues users whose
sessions run as the table owner role, so what a migration creates is the
owner's and outlives the user. A new table is usable by no application role
until a role's settings name it and `pulumi up` runs; a name that no table has
is refused at preview; the drift report lists tables no setting names."""

from __future__ import annotations

import os
import subprocess

import psycopg
import pytest
from pulumi import automation as auto

from stacks import REPO, ProgramStack, admin_connect, vault


def credential(stack: ProgramStack, role: str) -> dict:
    return vault().secrets.database.generate_credentials(role, mount_point=stack.mount)


def connect_as(stack: ProgramStack, secret: dict) -> psycopg.Connection:
    return psycopg.connect(
        host="127.0.0.1",
        port=stack.server.port,
        dbname=stack.database,
        autocommit=True,
        user=secret["data"]["username"],
        password=secret["data"]["password"],
    )


def test_a_migration_makes_a_table_that_no_role_uses_until_the_settings_name_it(new_stack: ProgramStack):
    migrate = f"g{new_stack.suffix}-migrate"
    table = f"made_by_migration_{new_stack.suffix}"
    writer = new_stack.roles_config()[0]
    new_stack.set(roles=[writer, {"name": migrate, "access": "migrate", "defaultTtl": "10m", "maxTtl": "1h"}])
    new_stack.stack.up()
    owner = f"it_{new_stack.suffix}_owner"

    # The migration, as a user of the migrate role: the table is the owner role's.
    migration = credential(new_stack, migrate)
    with connect_as(new_stack, migration) as session:
        assert session.execute("SELECT current_user, session_user").fetchone() == (owner, migration["data"]["username"])
        session.execute(f"CREATE TABLE {table} (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text)")
        session.execute(f"INSERT INTO {table} (note) VALUES ('first')")
        assert session.execute("SELECT tableowner FROM pg_tables WHERE tablename = %s", (table,)).fetchone() == (owner,)

    # Least privilege: the application's role cannot use it yet (no blanket default privileges).
    reader = credential(new_stack, new_stack.role_name)
    with connect_as(new_stack, reader) as session, pytest.raises(psycopg.errors.InsufficientPrivilege):
        session.execute(f"SELECT * FROM {table}")
    vault().sys.revoke_lease(reader["lease_id"])
    report = subprocess.run(
        ["make", "--no-print-directory", "drift", f"STACK={new_stack.stack.name}", f"PROJECT={new_stack.project_dir}"],
        cwd=REPO,
        env={**os.environ, **new_stack.stack.workspace.env_vars},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert f"- {table}: usable by no application role" in report.stdout, report.stdout + report.stderr
    assert "drift: none" in report.stdout, report.stdout  # listed, not counted as drift
    print("\n`make drift` after a migration made a table:\n" + report.stdout[report.stdout.index("drift report") :])

    # A name that no table has is refused at preview, naming the setting.
    new_stack.set(
        roles=[
            {**writer, "tables": ["weekly_metrics_reporting", "no_such_table"]},
            {"name": migrate, "access": "migrate"},
        ]
    )
    with pytest.raises(auto.CommandError) as refused:
        new_stack.stack.preview()
    assert "names the table 'no_such_table', which neither tables.py nor the database has" in str(refused.value)

    # Named by the settings, and `up`: a fresh credential of the application's role can use it.
    new_stack.set(
        roles=[
            {**writer, "tables": ["weekly_metrics_reporting", table]},
            {"name": migrate, "access": "migrate", "defaultTtl": "10m", "maxTtl": "1h"},
        ]
    )
    new_stack.stack.up()
    writer_secret = credential(new_stack, new_stack.role_name)
    with connect_as(new_stack, writer_secret) as session:
        session.execute(f"INSERT INTO {table} (note) VALUES ('from the application')")
        assert session.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 2
    vault().sys.revoke_lease(writer_secret["lease_id"])
    assert set(new_stack.stack.preview().change_summary) == {"same"}  # the audit finds nothing undeclared

    # Revoking the migration user drops it, and leaves the table and its rows.
    vault().sys.revoke_lease(migration["lease_id"])
    with new_stack.server.connect(new_stack.database) as admin:
        assert (
            admin.execute(
                "SELECT count(*) FROM pg_roles WHERE rolname = %s", (migration["data"]["username"],)
            ).fetchone()[0]
            == 0
        )
        assert admin.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 2
    # The smoke check checks each role by its access: the migrate role creates a table as the owner.
    verify = subprocess.run(
        ["make", "--no-print-directory", "verify", f"STACK={new_stack.stack.name}", f"PROJECT={new_stack.project_dir}"],
        cwd=REPO,
        env={**os.environ, **new_stack.stack.workspace.env_vars},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert verify.returncode == 0 and "CREATE TABLE (rolled back)" in verify.stdout, verify.stdout[-3000:]


def test_a_table_a_migration_made_under_another_owner_is_refused_at_preview_with_the_fix(new_stack: ProgramStack):
    """Issue "No single mistake wedges a stack", class 6: before, the preview passed
    and `up` failed halfway with `permission denied for table`."""
    new_stack.stack.up()
    table, owner = f"by_hand_{new_stack.suffix}", f"it_{new_stack.suffix}_owner"
    with admin_connect(new_stack.database) as superuser:
        superuser.execute(f"CREATE TABLE {table} (id int)")  # the superuser's, not the owner role's
    writer = new_stack.roles_config()[0]
    new_stack.set(roles=[{**writer, "tables": ["weekly_metrics_reporting", table]}])
    with pytest.raises(auto.CommandError) as refused:
        new_stack.stack.preview()
    fix = f"ALTER TABLE public.{table} OWNER TO {owner};"
    assert f"which belongs to 'postgres', not to the stack's table owner '{owner}'" in str(refused.value)
    assert fix in str(refused.value) and "Nothing was changed." in str(refused.value)
    with admin_connect(new_stack.database) as superuser:
        superuser.execute(fix)
    new_stack.stack.up()
    assert set(new_stack.stack.preview(refresh=True).change_summary) == {"same"}
