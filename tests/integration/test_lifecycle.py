"""The whole lifecycle with the real engine: up, smoke check, no-op up, a TTL
change previewed and applied, destroy with leases outstanding."""

from __future__ import annotations

import os
import re

import psycopg
import pytest
from psycopg import sql
from pulumi import automation as auto

from sourced_env import superuser_password
from stacks import DEPLOYER, ProgramStack, admin_connect, deployer_password, vault


def changes_of(stack: auto.Stack) -> tuple[dict, list]:
    """Preview; returns the change summary and, for each resource that would
    change, its URN, the operation and the input keys whose values differ."""
    events: list = []
    result = stack.preview(diff=True, on_event=events.append)
    changing = []
    for event in events:
        step = event.resource_pre_event.metadata if event.resource_pre_event else None
        if step is None or step.op == "same" or step.type.startswith("pulumi:providers:"):
            continue
        old, new = step.old.inputs if step.old else {}, step.new.inputs if step.new else {}
        changing.append((step.urn, step.op, sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))))
    return result.change_summary, changing


def test_lifecycle(new_stack: ProgramStack):
    stack = new_stack.stack
    created = stack.up()
    assert created.summary.result == "succeeded"
    assert created.summary.resource_changes["create"] == new_stack.resource_count()

    outputs = new_stack.outputs()
    assert outputs["credentialPaths"] == {new_stack.role_name: f"{new_stack.mount}/creds/{new_stack.role_name}"}
    report = new_stack.smoke_check()
    assert report.passed, report.table()

    # The real providers, not look-alikes.
    types = new_stack.resource_types()
    for expected in (
        "vault:index/mount:Mount",
        "vault:database/secretBackendConnection:SecretBackendConnection",
        "vault:database/secretBackendRole:SecretBackendRole",
        "postgresql:index/role:Role",
        "postgresql:index/grant:Grant",
        "postgresql:index/grantRole:GrantRole",
        "random:index/randomPassword:RandomPassword",
        "pulumi:providers:vault",
        "pulumi:providers:postgresql",
    ):
        assert expected in types, (expected, types)

    # No secret in clear text in the stored state, the stack file or what `up` printed.
    vault_admin_password = new_stack.vault_admin_password()
    assert len(vault_admin_password) >= 32
    state = new_stack.raw_state() + (new_stack.project_dir / f"Pulumi.{stack.name}.yaml").read_text()
    assert "weekly_metrics_reporting" in state
    for secret in (vault_admin_password, deployer_password(), superuser_password(), os.environ["VAULT_TOKEN"]):
        assert secret not in state and secret not in created.stdout and secret not in created.stderr

    again = stack.up()
    assert set(again.summary.resource_changes) == {"same"}, again.summary.resource_changes

    # A longer credential: the Vault role, and the AppRole whose tokens live as long.
    new_stack.set(roles=new_stack.roles_config(defaultTtl="2h"))
    summary, changing = changes_of(stack)
    assert summary.get("update") == 2 and set(summary) == {"same", "update"}, summary
    assert {(urn.split("::")[-1], op, tuple(diffs)) for urn, op, diffs in changing} == {
        (f"vault-database-secrets-role-{new_stack.role_name}", "update", ("defaultTtl",)),
        (f"app-identities-{new_stack.role_name}", "update", ("tokenTtl",)),
    }, changing
    applied = stack.up()
    assert applied.summary.resource_changes.get("update") == 2
    role = vault().secrets.database.read_role(new_stack.role_name, mount_point=new_stack.mount)["data"]
    assert role["default_ttl"] == 7200

    leases = [
        vault().secrets.database.generate_credentials(new_stack.role_name, mount_point=new_stack.mount)
        for _ in range(5)
    ]
    users = [lease["data"]["username"] for lease in leases]
    stack.destroy()

    with admin_connect(new_stack.database) as admin:
        tables = admin.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
        roles = admin.execute(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (users + new_stack.program_roles,)
        ).fetchall()
    assert tables == [] and roles == []
    assert f"{new_stack.mount}/" not in vault().sys.list_mounted_secrets_engines()["data"]


def test_keep_tables_on_destroy_leaves_the_data(new_stack: ProgramStack):
    new_stack.set(keepTablesOnDestroy="true")
    new_stack.stack.up()
    new_stack.stack.destroy()
    with admin_connect(new_stack.database) as admin:
        rows = admin.execute("SELECT count(*) FROM weekly_metrics_reporting").fetchone()[0]
        owner = admin.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'employee_salary'").fetchone()
        roles = admin.execute(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (new_stack.program_roles,)
        ).fetchall()
    assert rows == 3 and owner == (DEPLOYER,) and roles == []


def test_revocation_drops_a_connected_user_that_owns_objects(deployed_stack: ProgramStack):
    secret = vault().secrets.database.generate_credentials(deployed_stack.role_name, mount_point=deployed_stack.mount)
    user, password = secret["data"]["username"], secret["data"]["password"]
    group = sql.Identifier(deployed_stack.role_name.replace("-", "_"))
    # The way a user comes to own objects: its group may create them.
    with admin_connect(deployed_stack.database) as admin:
        admin.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(group))
    session = psycopg.connect(
        host="127.0.0.1",
        port=int(os.environ["PGPORT"]),
        dbname=deployed_stack.database,
        user=user,
        password=password,
        autocommit=True,
    )
    session.execute("CREATE TABLE scratch_notes (note text)")

    vault().sys.revoke_lease(secret["lease_id"])

    with admin_connect(deployed_stack.database) as admin:
        left = admin.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (user,)).fetchone()[0]
        owner = admin.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'scratch_notes'").fetchone()
        admin.execute("DROP TABLE scratch_notes")
        admin.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM {}").format(group))
    assert left == 0
    assert owner == tuple(deployed_stack.vault_logins())  # the login of the connection that issued it
    try:
        session.execute("SELECT 1")
        still_connected = True
    except psycopg.OperationalError:
        still_connected = False
    assert not still_connected


def test_a_new_vault_address_updates_without_revoking_leases(deployed_stack: ProgramStack):
    secret = vault().secrets.database.generate_credentials(deployed_stack.role_name, mount_point=deployed_stack.mount)
    same_vault = os.environ["VAULT_ADDR"].replace("127.0.0.1", "localhost")
    deployed_stack.set(vaultAddress=same_vault)
    try:
        changes = deployed_stack.stack.up().summary.resource_changes
    finally:
        deployed_stack.set(vaultAddress=os.environ["VAULT_ADDR"])
    # The provider and the lease revoker learn the new address; nothing is replaced.
    assert "replace" not in changes and "delete" not in changes and changes.get("update", 0) >= 1, changes
    assert deployed_stack.outputs()["vaultAddress"] == same_vault
    lease = vault().sys.read_lease(secret["lease_id"])["data"]
    assert lease["ttl"] > 0
    deployed_stack.stack.up()
    vault().sys.revoke_lease(secret["lease_id"])


def test_read_role_with_its_own_username_template(new_stack: ProgramStack):
    reader = f"r{new_stack.suffix}-read"
    template = '{{ printf "rd_%s_%s" (random 10 | lowercase) (unix_time) | truncate 63 }}'
    new_stack.set(
        roles=new_stack.roles_config()
        + [
            {
                "name": reader,
                "tables": ["weekly_metrics_reporting"],
                "access": "read",
                "defaultTtl": "10m",
                "maxTtl": "1h",
                "usernameTemplate": template,
            }
        ]
    )
    new_stack.stack.up()
    secret = vault().secrets.database.generate_credentials(reader, mount_point=new_stack.mount)
    user, password = secret["data"]["username"], secret["data"]["password"]
    assert re.match(r"^rd_[a-z0-9]{10}_\d+$", user), user
    assert secret["lease_duration"] == 600
    with psycopg.connect(
        host="127.0.0.1",
        port=int(os.environ["PGPORT"]),
        dbname=new_stack.database,
        user=user,
        password=password,
        autocommit=True,
    ) as session:
        assert session.execute("SELECT count(*) FROM weekly_metrics_reporting").fetchone()[0] == 3
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            session.execute(
                "INSERT INTO weekly_metrics_reporting (week_ending, product_downloads, github_stars, "
                "twitter_followers) VALUES (now(), 1, 1, 1)"
            )
    vault().sys.revoke_lease(secret["lease_id"])
    with admin_connect(new_stack.database) as admin:
        assert admin.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (user,)).fetchone()[0] == 0


def test_objects_deleted_by_hand_come_back_on_refresh(new_stack: ProgramStack):
    """What an OpenBao restart or a hand-made DROP does: `up --refresh` notices and converges."""
    new_stack.stack.up()
    vault().sys.disable_secrets_engine(new_stack.mount)
    group = new_stack.role_name.replace("-", "_")
    with admin_connect(new_stack.database) as admin:
        admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(group)))
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(group)))
    result = new_stack.stack.up(refresh=True)
    assert result.summary.resource_changes.get("create", 0) >= 5, result.summary.resource_changes
    report = new_stack.smoke_check()
    assert report.passed, report.table()


def test_destroy_revokes_every_lease_first(new_stack: ProgramStack):
    """20 leases on two roles, one user connected and owning a table: destroy
    revokes them all through Vault (so the revocation statements run) before
    the roles, the connection and the mount go, and leaves nothing behind."""
    reader = f"r{new_stack.suffix}-read"
    new_stack.set(
        roles=new_stack.roles_config()
        + [
            {
                "name": reader,
                "tables": ["weekly_metrics_reporting"],
                "access": "read",
                "defaultTtl": "1h",
                "maxTtl": "2h",
            }
        ]
    )
    new_stack.stack.up()
    client = vault()
    leases = [
        client.secrets.database.generate_credentials(role, mount_point=new_stack.mount)
        for role in (new_stack.role_name, reader)
        for _ in range(10)
    ]
    users = [lease["data"]["username"] for lease in leases]
    owner = leases[0]["data"]
    with admin_connect(new_stack.database) as admin:
        admin.execute(
            sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(new_stack.role_name.replace("-", "_")))
        )
    session = psycopg.connect(
        host="127.0.0.1",
        port=int(os.environ["PGPORT"]),
        dbname=new_stack.database,
        user=owner["username"],
        password=owner["password"],
        autocommit=True,
    )
    session.execute("CREATE TABLE scratch_notes (note text)")

    result = new_stack.stack.destroy()
    assert result.summary.result == "succeeded"

    with admin_connect(new_stack.database) as admin:
        left = admin.execute(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
            (users + new_stack.program_roles + [reader.replace("-", "_")],),
        ).fetchall()
    assert left == []
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    assert f"{new_stack.mount}/" not in client.sys.list_mounted_secrets_engines()["data"]


def test_replacing_a_connection_or_a_role_revokes_its_leases_first(new_stack: ProgramStack):
    new_stack.stack.up()
    client = vault()

    def users_of(role: str, count: int) -> list[str]:
        return [
            client.secrets.database.generate_credentials(role, mount_point=new_stack.mount)["data"]["username"]
            for _ in range(count)
        ]

    def existing(users: list[str]) -> list:
        with admin_connect(new_stack.database) as admin:
            return admin.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (users,)).fetchall()

    # A new connection name: a new connection; the old one goes, after its leases.
    before = users_of(new_stack.role_name, 3)
    new_stack.set(vaultConnectionName="pg-second")
    changes = new_stack.stack.up().summary.resource_changes
    assert changes.get("replace", 0) >= 1, changes
    assert existing(before) == []
    assert (
        client.secrets.database.read_role(new_stack.role_name, mount_point=new_stack.mount)["data"]["db_name"]
        == "pg-second"
    )

    # A renamed role: the new one is made, the old one's leases revoked before it goes.
    before = users_of(new_stack.role_name, 3)
    renamed = f"n{new_stack.suffix}-readwrite"
    new_stack.set(roles=new_stack.roles_config(name=renamed))
    new_stack.stack.up()
    assert existing(before) == []
    (user,) = users_of(renamed, 1)
    assert existing([user]) == [(user,)]
    new_stack.stack.destroy()
    assert existing([user]) == []
    with admin_connect(new_stack.database) as admin:
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(renamed.replace("-", "_"))))
