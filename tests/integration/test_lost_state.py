"""A lost state (issue "No single mistake wedges a stack", class 3): after
`pulumi stack rm --force` with live leases, `up` refuses the stack's own roles
and says why and what to run; `python -m deployer.orphans remove` finds every
object by the stack's mark and removes it, leases first, keeping the tables and
their rows; then `up` makes the stack again and the next one is all `same`."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pulumi import automation as auto

from stacks import REPO, ProgramStack, SplitStacks, split_on_postgres18, vault

KEPT_ROW = "SELECT count(*) FROM weekly_metrics_reporting WHERE product_downloads = 4242"
MARK_QUERY = "SELECT rolname FROM pg_roles WHERE shobj_description(oid, 'pg_authid') = %s"


def orphans(stack: ProgramStack, action: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(REPO / "venv/bin/python"),
            "-m",
            "deployer.orphans",
            action,
            "--stack",
            stack.stack.name,
            "--project-dir",
            str(stack.project_dir),
        ],
        cwd=REPO,
        env={**os.environ, **stack.stack.workspace.env_vars},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_lost_state_with_live_leases_is_cleared_and_made_again(new_stack: ProgramStack):
    name, mark = new_stack.stack.name, f"pg-dynamic-creds stack pgcreds/{new_stack.stack.name}"
    new_stack.stack.up()
    client = vault()
    credentials = [client.read(f"{new_stack.mount}/creds/{new_stack.role_name}")["data"]["username"] for _ in range(2)]
    with new_stack.server.connect(new_stack.database) as admin:
        admin.execute(
            "INSERT INTO weekly_metrics_reporting (week_ending, product_downloads, github_stars, "
            "twitter_followers) VALUES ('2026-11-29', 4242, 0, 0)"
        )
        made = {role for (role,) in admin.execute(MARK_QUERY, (mark,))}
    assert made == set(new_stack.program_roles)

    new_stack.run("stack", "rm", "--yes", "--force", "--preserve-config")
    new_stack.run("stack", "select", "--create", "--secrets-provider", "hashivault://pgcreds-tests")
    with pytest.raises(auto.CommandError) as refused:
        new_stack.stack.up()
    assert f"was made by this stack (its comment: {mark!r}), but the stack's state does not record it" in str(
        refused.value
    )
    assert f"python -m deployer.orphans remove --stack {name}" in str(refused.value)

    listed = orphans(new_stack, "list")
    assert listed.returncode == 0, listed.stderr
    assert f"Vault mount {new_stack.mount}\n" in listed.stderr and f"leases under {new_stack.mount}/" in listed.stderr
    assert f"Vault auth method {new_stack.mount}-approle" in listed.stderr
    assert all(f"PostgreSQL role {role}\n" in listed.stderr + "\n" for role in made)
    assert f"{new_stack.mount}/" in client.sys.list_mounted_secrets_engines()["data"]  # `list` changed nothing

    removed = orphans(new_stack, "remove")
    assert removed.returncode == 0, removed.stderr
    assert f"{new_stack.mount}/" not in client.sys.list_mounted_secrets_engines()["data"]
    assert f"{new_stack.mount}-approle/" not in client.sys.list_auth_methods()["data"]
    assert not [
        p for p in client.sys.list_acl_policies()["data"]["keys"] if p.startswith(f"pgcreds-{new_stack.mount}-")
    ]
    with new_stack.server.connect(new_stack.database) as admin:
        left = [
            role
            for (role,) in admin.execute(
                "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (sorted(made) + credentials,)
            )
        ]
        assert left == [], "roles left behind (the leases' credentials, or the stack's own)"
        assert admin.execute(KEPT_ROW).fetchone() == (1,)

    assert new_stack.stack.up().summary.result == "succeeded"
    assert set(new_stack.stack.up().summary.resource_changes) == {"same"}
    assert new_stack.smoke_check().passed
    with new_stack.server.connect(new_stack.database) as admin:
        assert admin.execute(KEPT_ROW).fetchone() == (1,)
        assert {role for (role,) in admin.execute(MARK_QUERY, (mark,))} == set(new_stack.program_roles)


def test_orphans_refuses_a_stack_that_has_a_state(deployed_stack: ProgramStack):
    refused = orphans(deployed_stack, "remove")
    assert refused.returncode != 0
    assert (
        "has a state with resources in it: `pulumi destroy` removes what it made. Nothing was changed."
        in refused.stderr
    )
    assert f"{deployed_stack.mount}/" in vault().sys.list_mounted_secrets_engines()["data"]


@pytest.fixture
def one_application(tmp_path: Path) -> Iterator[SplitStacks]:
    with split_on_postgres18(tmp_path, 1) as organisation:
        yield organisation


def test_an_application_stacks_lost_state_is_cleared_inside_the_platforms_mount(one_application: SplitStacks):
    """An application stack's Vault objects live in its platform's mount: its
    connection (which logs in as its marked login), its Vault role and its AppRole
    go, with the role's leases; the platform and its mount stay."""
    ((name, stack),) = one_application.applications.items()
    one_application.platform.stack.up()
    stack.stack.up()
    client = vault()
    username = client.read(f"{stack.mount}/creds/{name}-rw")["data"]["username"]  # a live lease

    stack.run("stack", "rm", "--yes", "--force", "--preserve-config")
    stack.run("stack", "select", "--create", "--secrets-provider", f"hashivault://pgcreds-{stack.stack.name}")
    with pytest.raises(auto.CommandError, match="the state was lost"):
        stack.stack.up()
    removed = orphans(stack, "remove")
    assert removed.returncode == 0, removed.stderr
    assert f"Vault connection {stack.mount}/config/{name}" in removed.stderr
    assert f"AppRole role auth/{stack.mount}-approle/role/{name}-rw" in removed.stderr
    assert f"{stack.mount}/" in client.sys.list_mounted_secrets_engines()["data"]  # the platform's, kept
    assert (client.list(f"{stack.mount}/config") or {}).get("data", {}).get("keys", []) == []
    with stack.server.connect(stack.database) as admin:
        left = [
            r
            for (r,) in admin.execute(
                "SELECT rolname FROM pg_roles WHERE rolname LIKE %s OR rolname = %s", (f"{name}\\_%", username)
            )
        ]
    assert left == []

    assert stack.stack.up().summary.result == "succeeded"
    assert set(stack.stack.up().summary.resource_changes) == {"same"}
