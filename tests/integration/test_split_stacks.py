"""The split layout (issue 20): a platform stack (PostgreSQL, the Vault mount, the
AppRole auth method) and two application stacks reading it through a
StackReference, each deployed with a Vault token that covers its own application
alone (vault-policies/application.hcl). Each issues working credentials; neither
can touch the other's roles, Vault objects or tables; destroying one leaves the
platform and the other issuing.

On PostgreSQL 18 (Aiven runs 16 to 18): from 16 on, a CREATEROLE login may alter
only the roles it holds ADMIN OPTION on, so an application's Vault login cannot
alter another application's group, which the test tries."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import hvac
import hvac.exceptions
import psycopg
import pytest
from psycopg import sql
from pulumi import automation as auto

from clients.tls import vault_tls_verify
from deployer import application_login
from deployer.bootstrap import PREVIEW_USER_CREATION, StackSpec, deploy_policy_text, preview_policy_text
from smoke_check import app_login
from stacks import (
    ProgramStack,
    SplitStacks,
    application_roles,
    cleanup_split,
    make_split,
    server_with_deployer,
    vault,
)


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SplitStacks]:
    server, env, _ = server_with_deployer("18", tmp_path_factory.mktemp("session"))
    organisation = make_split(tmp_path_factory.mktemp("split"), 2, env=env, server=server)
    yield organisation
    cleanup_split(organisation)


def spec_of(split: SplitStacks, stack: ProgramStack, application: str) -> StackSpec:
    """The bootstrap's `--stack` for a stack of the split: its own transit key, and an
    application's platform stack."""
    return StackSpec(stack.stack.name, stack.mount, application, split.platform.stack.name if application else "")


def deploy_token(root: hvac.Client, split: SplitStacks, stack: ProgramStack, application: str) -> str:
    """A token with what the bootstrap gives the stack's deployer (an application's, or
    with no application the platform's), valid a few minutes."""
    policy = f"{stack.mount}-deploy-{application or 'platform'}"
    root.sys.create_or_update_acl_policy(policy, deploy_policy_text(spec_of(split, stack, application)))
    return root.auth.token.create(policies=[policy], ttl="15m")["auth"]["client_token"]


def preview_token(root: hvac.Client, split: SplitStacks, stack: ProgramStack, application: str) -> str:
    policy = f"{stack.mount}-deploy-preview-{application}"
    root.sys.create_or_update_acl_policy(policy, preview_policy_text(spec_of(split, stack, application)))
    return root.auth.token.create(policies=[policy], ttl="15m")["auth"]["client_token"]


def preview_login(server, pgpass: Path) -> str:
    """A preview login on `server` made by the preview role's own creation statements."""
    name, password = f"v-preview-{secrets.token_hex(4)}", secrets.token_urlsafe(24)
    with server.connect() as superuser:
        for statement in PREVIEW_USER_CREATION:
            superuser.execute(
                statement.replace("{{name}}", name)
                .replace("{{password}}", password)
                .replace("{{expiration}}", "infinity")
            )
    with pgpass.open("a") as out:
        out.write(f"127.0.0.1:{server.port}:*:{name}:{password}\n")
    return name


def issue_and_use(root: hvac.Client, stack: ProgramStack, application: str) -> psycopg.Connection:
    """The application's own path: AppRole login, a credential, a row in its table."""
    paths = stack.outputs()["appRoles"][f"{application}-rw"]
    app = app_login(root, paths)
    secret = app.secrets.database.generate_credentials(f"{application}-rw", mount_point=stack.mount)
    conn = psycopg.connect(
        host="127.0.0.1",
        port=stack.server.port,
        dbname=stack.database,
        autocommit=True,
        user=secret["data"]["username"],
        password=secret["data"]["password"],
    )
    conn.execute(sql.SQL("INSERT INTO {} (value) VALUES (1)").format(sql.Identifier(f"{application}_items")))
    return conn


def test_platform_and_two_applications_each_alone_in_its_own_objects(split: SplitStacks):
    root = vault()
    platform = split.platform
    a, b = split.applications
    stack_a, stack_b = split.applications[a], split.applications[b]

    # The platform's deployer holds vault-policies/deployer.hcl; each application's, its application.hcl.
    tokens = {"": deploy_token(root, split, platform, "")}
    with platform.environment(VAULT_TOKEN=tokens[""], BAO_TOKEN=tokens[""]):
        platform.stack.up()
    made = {t for t in platform.resource_types() if not t.startswith(("pulumi:", "pgcreds:"))}
    assert made == {
        "vault:index/mount:Mount",
        "vault:index/authBackend:AuthBackend",
        "vault:index/policy:Policy",
        "pulumi-python:dynamic/vault:PlatformInUse",
    }
    tokens.update({name: deploy_token(root, split, stack, name) for name, stack in split.applications.items()})
    for name, stack in split.applications.items():
        with stack.environment(VAULT_TOKEN=tokens[name], BAO_TOKEN=tokens[name]):
            stack.stack.up()

    # Each application's tables are in its own schema, owned by its owner role, and
    # its credentials find them there (their search_path).
    with stack_a.server.connect(stack_a.database) as superuser:
        placed = superuser.execute(
            "SELECT n.nspname, pg_get_userbyid(n.nspowner), c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname LIKE %s "
            "AND c.relkind = 'r' ORDER BY 3",
            ("%\\_items",),
        ).fetchall()
    assert placed == [(a, f"{a}_owner", f"{a}_items"), (b, f"{b}_owner", f"{b}_items")], placed

    # Each issues working credentials, on its own table alone.
    conn_a, conn_b = issue_and_use(root, stack_a, a), issue_and_use(root, stack_b, b)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn_a.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(b, f"{b}_items")))  # B's schema
    conn_b.close()

    # An application's AppRole reads its own role's credentials, not the other's.
    app_a = app_login(root, stack_a.outputs()["appRoles"][f"{a}-rw"])
    with pytest.raises(hvac.exceptions.Forbidden):
        app_a.secrets.database.generate_credentials(f"{b}-rw", mount_point=stack_a.mount)

    # A's deploy token may not touch B's Vault objects, the platform's, or policies.
    deployer_a = hvac.Client(url=root.url, token=tokens[a], verify=vault_tls_verify())
    refused = {
        "B's Vault role": lambda: deployer_a.write(
            f"{stack_a.mount}/roles/{b}-rw", db_name=b, creation_statements=["SELECT 1"]
        ),
        "B's connection": lambda: deployer_a.delete(f"{stack_a.mount}/config/{b}"),
        "B's leases": lambda: deployer_a.sys.revoke_prefix(f"{stack_a.mount}/creds/{b}-rw"),
        "B's AppRole": lambda: deployer_a.write(f"{stack_a.mount}-approle/role/{b}-rw", token_ttl=60),
        "an AppRole of its own with another policy": lambda: deployer_a.write(
            f"{stack_a.mount}-approle/role/{a}-rw", token_policies=["root"]
        ),
        "a policy": lambda: deployer_a.sys.create_or_update_acl_policy(
            f"pgcreds-{stack_a.mount}-{a}-x", 'path "*" { capabilities = ["read"] }'
        ),
        "the platform's mount": lambda: deployer_a.sys.disable_secrets_engine(stack_a.mount),
    }
    for what, attempt in refused.items():
        with pytest.raises(hvac.exceptions.Forbidden):
            attempt()
            pytest.fail(f"A's deploy token could change {what}")

    # Each application deploys as its own PostgreSQL login, and A's may not touch B's objects.
    deploy_a = psycopg.connect(
        host="127.0.0.1",
        port=stack_a.server.port,
        dbname=stack_a.database,
        autocommit=True,
        user=application_login(a),
        password=split.login_passwords[a],
    )
    for what, statement in {
        "read B's table": sql.SQL("SELECT * FROM {}").format(sql.Identifier(b, f"{b}_items")),
        "create in B's schema": sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier(b, "x")),
        "alter B's role": sql.SQL("ALTER ROLE {} CONNECTION LIMIT 0").format(sql.Identifier(f"{b}_rw")),
        "drop B's role": sql.SQL("DROP ROLE {}").format(sql.Identifier(f"{b}_rw")),
        "SET ROLE to B's role": sql.SQL("SET ROLE {}").format(sql.Identifier(f"{b}_rw")),
        "SET ROLE to B's owner": sql.SQL("SET ROLE {}").format(sql.Identifier(f"{b}_owner")),
        "grant itself B's role": sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(f"{b}_rw")),
    }.items():
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            deploy_a.execute(statement)
            pytest.fail(f"A's deploy login could {what}")
    deploy_a.close()
    capabilities = hvac.Client(url=root.url, token=tokens[a], verify=vault_tls_verify()).write(
        "sys/capabilities-self",
        paths=[
            f"pgcreds-platform/static-creds/deployer-{a}",
            f"pgcreds-platform/static-creds/deployer-{b}",
            "pgcreds-platform/static-creds/deployer",
        ],
    )
    assert capabilities[f"pgcreds-platform/static-creds/deployer-{a}"] == ["read"]
    assert capabilities[f"pgcreds-platform/static-creds/deployer-{b}"] == ["deny"]
    assert capabilities["pgcreds-platform/static-creds/deployer"] == ["deny"]

    # A's stack cannot declare B's names: refused at preview, naming the setting.
    with stack_a.environment(VAULT_TOKEN=tokens[a], BAO_TOKEN=tokens[a]):
        stack_a.set(roles=application_roles(a) + application_roles(b))
        with pytest.raises(auto.CommandError) as failure:
            stack_a.stack.preview()
        assert f"is not a name of the application {a!r}" in str(failure.value)
        stack_a.set(roles=application_roles(a))

    # PostgreSQL: A's Vault login holds ADMIN OPTION on A's roles alone, and may not alter B's.
    (login_a,) = stack_a.vault_logins()
    with stack_a.server.connect(stack_a.database) as superuser:
        administered = [
            name
            for (name,) in superuser.execute(
                "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
                "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s AND m.admin_option",
                (login_a,),
            )
        ]
        # (16+: and the users it made, which it administers from their creation)
        assert f"{a}_rw" in administered and all(
            name == f"{a}_rw" or name.startswith(f"v-{a}-rw-") for name in administered
        ), administered
        superuser.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(login_a)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            superuser.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT 0").format(sql.Identifier(f"{b}_rw")))

    # The platform's destroy waits for its applications: refused, and nothing of it goes.
    with (
        pytest.raises(auto.CommandError) as failure,
        platform.environment(VAULT_TOKEN=tokens[""], BAO_TOKEN=tokens[""]),
    ):
        platform.stack.destroy()
    assert "still holds the connections" in str(failure.value) and "`pulumi destroy` those stacks first" in str(
        failure.value
    )
    assert f"{platform.mount}/" in root.sys.list_mounted_secrets_engines()["data"]
    issue_and_use(root, stack_b, b).close()

    # B's preview with its preview policy alone (its key, its platform's to decrypt)
    # and a read-only PostgreSQL login: the refresh reads, and nothing changes.
    token = preview_token(root, split, stack_b, b)
    login = preview_login(stack_b.server, Path(stack_b.stack.workspace.env_vars["PGPASSFILE"]))
    with stack_b.environment(VAULT_TOKEN=token, BAO_TOKEN=token, PGUSER=login, PGCREDS_SESSION_KIND="preview"):
        changes = stack_b.stack.preview(refresh=True, expect_no_changes=True).change_summary
    assert set(changes) == {"same"}, changes
    with stack_b.server.connect() as superuser:
        superuser.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(login)))

    # Destroying A leaves the platform and B as they were: B still issues, and
    # neither B's nor the platform's preview plans a change.
    with stack_a.environment(VAULT_TOKEN=tokens[a], BAO_TOKEN=tokens[a]):
        stack_a.stack.destroy()
    assert f"{a}-rw" not in root.list(f"{stack_a.mount}/roles")["data"]["keys"]
    with pytest.raises(psycopg.OperationalError):
        conn_a.execute("SELECT 1")  # its lease was revoked, its session ended
    issue_and_use(root, stack_b, b).close()
    for stack, token in ((stack_b, tokens[b]), (platform, tokens[""])):
        with stack.environment(VAULT_TOKEN=token, BAO_TOKEN=token):
            changes = stack.stack.preview(expect_no_changes=True).change_summary
        assert set(changes) == {"same"}, changes


def test_a_platform_stack_of_another_kind_or_mount_is_refused_at_preview(split: SplitStacks):
    stack = next(iter(split.applications.values()))
    before = stack.stack.get_all_config()
    try:
        stack.set(vaultMountPath=f"{stack.mount}-other")
        with pytest.raises(auto.CommandError) as failure:
            stack.stack.preview()
        assert f"pgcreds:vaultMountPath is '{stack.mount}-other', but the platform stack" in str(failure.value)
        stack.stack.set_config("pgcreds:vaultMountPath", before["pgcreds:vaultMountPath"])
        stack.set(platformStack=stack.stack.name)  # itself: not a platform
        with pytest.raises(auto.CommandError) as failure:
            stack.stack.preview()
        assert "which is not a platform stack" in str(failure.value)
    finally:
        for key in ("pgcreds:vaultMountPath", "pgcreds:platformStack"):
            stack.stack.set_config(key, before[key])
