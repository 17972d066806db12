"""A role renamed in an application stack (issue "No single mistake wedges a
stack", class 5): before, the old group role could not be dropped ("some objects
depend on it") and kept its table privileges, and every later `up` failed the same
way. On PostgreSQL 18 (where a deploy login acts on the roles it made through
ADMIN OPTION alone), with a live credential of the old role: the rename goes
through in one `up`, the old group, its Vault role and its AppRole are gone, the
new role issues, and the next `up` is all `same`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from smoke_check import app_login
from stacks import SplitStacks, application_roles, split_on_postgres18, vault


@pytest.fixture
def one_application(tmp_path: Path) -> Iterator[SplitStacks]:
    with split_on_postgres18(tmp_path, 1) as organisation:
        yield organisation


def credential(stack, role: str) -> psycopg.Connection:
    app = app_login(vault(), stack.outputs()["appRoles"][role])
    secret = app.secrets.database.generate_credentials(role, mount_point=stack.mount)
    return psycopg.connect(
        host="127.0.0.1",
        port=stack.server.port,
        dbname=stack.database,
        autocommit=True,
        user=secret["data"]["username"],
        password=secret["data"]["password"],
    )


def test_a_role_renamed_in_an_application_stack_goes_through_in_one_up(one_application: SplitStacks):
    ((name, stack),) = one_application.applications.items()
    one_application.platform.stack.up()
    stack.stack.up()
    old_credential = credential(stack, f"{name}-rw")  # a live lease of the old role
    old_credential.execute(sql.SQL("INSERT INTO {} (value) VALUES (1)").format(sql.Identifier(f"{name}_items")))

    stack.set(roles=application_roles(name, name=f"{name}-writer"))
    assert stack.stack.up().summary.result == "succeeded"
    assert set(stack.stack.up().summary.resource_changes) == {"same"}

    with stack.server.connect(stack.database) as superuser:
        groups = {
            r for (r,) in superuser.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (f"{name}\\_%",))
        }
        grantees = {
            r
            for (r,) in superuser.execute(
                "SELECT DISTINCT grantee FROM information_schema.role_table_grants WHERE table_name = %s",
                (f"{name}_items",),
            )
        }
    assert f"{name}_rw" not in groups and f"{name}_writer" in groups, groups
    assert f"{name}_rw" not in grantees
    client = vault()
    assert f"{name}-rw" not in (client.list(f"{stack.mount}/roles") or {}).get("data", {}).get("keys", [])
    assert f"{name}-rw" not in (client.list(f"{stack.mount}-approle/role") or {}).get("data", {}).get("keys", [])
    with credential(stack, f"{name}-writer") as new_credential:
        assert new_credential.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(f"{name}_items"))
        ).fetchone() == (1,)
