"""Least privilege, checked by attack: every identity of security/access.yaml
logs in for real and probes the fixed lists of Vault paths and PostgreSQL
statements. Whatever it can do that the matrix does not declare fails the test,
and so does whatever the matrix declares that it cannot do. Then the preview
identity, which runs a pull request's own code, decrypts every secret of the
stack and tries each as a password and as a token: none may open anything."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import hvac
import hvac.exceptions
import psycopg
import pytest
from psycopg import sql
from test_deploy_path import CI_MOUNT, CI_STACK, ci_login, github_token

from access_probes import (
    Login,
    declared_capabilities,
    expand,
    load_matrix,
    pg_allowed,
    pg_statements,
    vault_capabilities,
)
from deployer import PLATFORM_MOUNT
from deployer.bootstrap import StackSpec, deploy_policy_text, policy_text
from smoke_check import app_login
from sourced_env import session_exports
from stacks import DEPLOYER, REPO, ProgramStack, admin_connect, cleanup, make_stack, vault

pytestmark = pytest.mark.both_servers  # and again on HashiCorp Vault (make test-vault)

APPLICATION, OTHER, PLATFORM_STACK = "acme", "othr", "tests-platform"


class MatrixStack(ProgramStack):
    """A stack on the mount and transit key that the CI identities of stack `tests` own."""

    @property
    def mount(self) -> str:
        return CI_MOUNT


def role_names(suffix: str) -> dict[str, str]:
    return {access: f"m{suffix}-{access}" for access in ("read", "readwrite", "migrate")}


@pytest.fixture(scope="module")
def matrix_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MatrixStack]:
    made = make_stack(tmp_path_factory.mktemp("matrix"))
    test_stack = MatrixStack(made.stack, made.project_dir, made.suffix, made.database, made.state_dir, made.server)
    roles = [
        {
            "name": name,
            "access": access,
            "defaultTtl": "1h",
            "maxTtl": "24h",
            **({} if access == "migrate" else {"tables": ["weekly_metrics_reporting"]}),
        }
        for access, name in role_names(test_stack.suffix).items()
    ]
    test_stack.set(vaultMountPath=CI_MOUNT, roles=roles)
    other_group = f"{OTHER}_rw"
    with admin_connect() as admin:
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(other_group)))
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(other_group)))
    test_stack.stack.up()
    yield test_stack
    cleanup(test_stack)
    with admin_connect() as admin:
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(other_group)))
    client = vault()
    for policy in client.sys.list_acl_policies()["data"]["keys"]:
        if policy.startswith("pgcreds-matrix-"):
            client.sys.delete_acl_policy(policy)


def names_of(test_stack: MatrixStack) -> dict[str, str]:
    roles = role_names(test_stack.suffix)
    return {
        "STACK": CI_STACK,
        "MOUNT": CI_MOUNT,
        "ROLE": roles["readwrite"],
        "CONNECTION": "postgresql",
        "APPLICATION": APPLICATION,
        "OTHER": OTHER,
        "OTHER_GROUP": f"{OTHER}_rw",
        "PLATFORM": PLATFORM_MOUNT,
        "PLATFORM_STACK": PLATFORM_STACK,
        "DATABASE": test_stack.database,
    }


def policy_token(name: str, text: str) -> str:
    """A token of one policy, written as the bootstrap writes it."""
    client = vault()
    client.sys.create_or_update_acl_policy(f"pgcreds-matrix-{name}", text)
    return client.auth.token.create(policies=[f"pgcreds-matrix-{name}"], ttl="15m")["auth"]["client_token"]


def vault_identities(test_stack: MatrixStack) -> dict[str, hvac.Client]:
    """Each Vault identity of the matrix, logged in as it would be."""

    def client(token: str) -> hvac.Client:
        return hvac.Client(url=os.environ["VAULT_ADDR"], token=token, verify=os.environ["VAULT_CACERT"])

    outputs = test_stack.outputs()
    return {
        "ci-preview": ci_login(f"pgcreds-preview-{CI_STACK}", github_token(ref="refs/pull/7/merge")),
        "ci-deploy": ci_login(f"pgcreds-deploy-{CI_STACK}", github_token()),
        "ci-fleet-deploy": ci_login("pgcreds-fleet-deploy", github_token()),
        "application-deploy": client(
            policy_token("application", deploy_policy_text(StackSpec(CI_STACK, CI_MOUNT, APPLICATION, PLATFORM_STACK)))
        ),
        "deploy-session": client(
            policy_token("session", policy_text("deploy-session.hcl", StackSpec(CI_STACK, CI_MOUNT)))
        ),
        "application-approle": app_login(vault(), outputs["appRoles"][role_names(test_stack.suffix)["readwrite"]]),
    }


def pg_identities(test_stack: MatrixStack, identities: dict[str, hvac.Client]) -> dict[str, Login]:
    """Each PostgreSQL identity of the matrix, with a login Vault issued for it."""

    def issued(client: hvac.Client, path: str) -> Login:
        data = client.read(path)["data"]
        return Login(data["username"], data["password"])

    preview, deploy = identities["ci-preview"], identities["ci-deploy"]
    deployer = deploy.read(f"{PLATFORM_MOUNT}/static-creds/deployer")["data"]
    roles = role_names(test_stack.suffix)
    (vault_login,) = test_stack.vault_logins()
    return {
        "preview-login": issued(preview, f"{PLATFORM_MOUNT}/creds/preview"),
        "state-read": issued(preview, f"{PLATFORM_MOUNT}/creds/state-read"),
        "state-write": issued(deploy, f"{PLATFORM_MOUNT}/creds/state-write"),
        "deployer": Login(DEPLOYER, deployer["password"]),
        # Its password is Vault's alone (rotate-root): the superuser takes its identity.
        "vault-connection-login": Login(vault_login, as_superuser=lambda database: admin_connect(database)),
        **{f"credential-{access}": issued(vault(), f"{CI_MOUNT}/creds/{name}") for access, name in roles.items()},
    }


def group_placeholders(test_stack: MatrixStack) -> dict[str, str]:
    """The stack's PostgreSQL roles by the names the matrix gives them."""
    groups = {name.replace("-", "_"): f"GROUP_{access}" for access, name in role_names(test_stack.suffix).items()}
    return {
        **groups,
        f"it_{test_stack.suffix}_owner": "OWNER",
        f"{OTHER}_rw": "OTHER_GROUP",
        DEPLOYER: "DEPLOYER",
        "pulumi_state_readers": "STATE_READERS",
        "pulumi_state_writers": "STATE_WRITERS",
    }


ATTRIBUTES = ("rolsuper", "rolcreaterole", "rolcreatedb", "rolcanlogin", "rolreplication", "rolbypassrls")


def role_facts(user: str, placeholders: dict[str, str]) -> tuple[set[str], set[str]]:
    """A login's attributes (SUPERUSER, CREATEROLE, … as the catalog says) and the
    roles it is a member of (with ADMIN OPTION marked), by the matrix's names."""
    with admin_connect() as admin:
        row = admin.execute(
            sql.SQL("SELECT {} FROM pg_roles WHERE rolname = %s").format(
                sql.SQL(", ").join(map(sql.Identifier, ATTRIBUTES))
            ),
            (user,),
        ).fetchone()
        members = admin.execute(
            "SELECT r.rolname, am.admin_option FROM pg_auth_members am JOIN pg_roles r ON r.oid = am.roleid "
            "JOIN pg_roles m ON m.oid = am.member WHERE m.rolname = %s",
            (user,),
        ).fetchall()
    attributes = {name.removeprefix("rol").upper() for name, value in zip(ATTRIBUTES, row) if value}

    def named(role: str) -> str:
        # Another stack's table owner on the same server (the dev stack's app_owner …):
        # the deployer serves every stack there.
        return placeholders.get(role) or ("ANOTHER_STACKS_OWNER" if role.endswith("_owner") else role)

    return attributes, {named(role) + (" WITH ADMIN OPTION" if admin_option else "") for role, admin_option in members}


@pytest.fixture
def identities(matrix_stack: MatrixStack) -> Iterator[dict[str, hvac.Client]]:
    logged_in = vault_identities(matrix_stack)
    yield logged_in
    for client in logged_in.values():
        try:
            client.auth.token.revoke_self()
        except hvac.exceptions.VaultError:
            pass


def test_each_vault_identity_holds_what_the_matrix_declares_and_nothing_more(
    matrix_stack: MatrixStack, identities: dict[str, hvac.Client]
):
    matrix = load_matrix()
    names = names_of(matrix_stack)
    assert set(identities) == set(matrix["vault"]["identities"])
    probes = [expand(path, names) for path in matrix["vault"]["probes"]]
    wrong: list[str] = []
    for identity, client in identities.items():
        allows = {expand(path, names): caps for path, caps in matrix["vault"]["identities"][identity]["allows"].items()}
        actual = vault_capabilities(client, probes)
        for path in probes:
            declared = declared_capabilities(allows, path)
            if actual[path] != declared:
                wrong.append(f"vault {identity} on {path}: can {sorted(actual[path])}, declared {sorted(declared)}")
    assert not wrong, "\n".join(wrong)


def test_each_postgres_identity_can_do_what_the_matrix_declares_and_nothing_more(
    matrix_stack: MatrixStack, identities: dict[str, hvac.Client]
):
    matrix = load_matrix()
    names = names_of(matrix_stack)
    placeholders = group_placeholders(matrix_stack)
    statements = pg_statements(names, sorted(set(placeholders) - {names["OTHER_GROUP"]}))

    def generic(probe: str) -> str:
        for concrete, placeholder in placeholders.items():
            probe = probe.replace(f"set role {concrete}", f"set role {placeholder}")
        return probe

    logins = pg_identities(matrix_stack, identities)
    assert set(logins) == set(matrix["postgres"]["identities"])
    port = int(os.environ["PGPORT"])
    wrong: list[str] = []
    for identity, login in logins.items():
        allowed = {
            generic(p) for p in pg_allowed(login, "127.0.0.1", port, {"DATABASE": matrix_stack.database}, statements)
        }
        entry = matrix["postgres"]["identities"][identity]
        declared = set(entry["allows"] or [])
        attributes, memberships = role_facts(login.user, placeholders)
        if attributes != set(entry["attributes"] or []):
            wrong.append(f"postgres {identity} has attributes {sorted(attributes)}, declared {entry['attributes']}")
        required, optional = set(entry["member of"] or []), set(entry.get("where present, also member of") or [])
        if not required <= memberships <= required | optional:
            wrong.append(f"postgres {identity} is a member of {sorted(memberships)}, declared {entry['member of']}")
        for probe in sorted(allowed - declared):
            wrong.append(f"postgres {identity} can {probe!r}, which the matrix does not declare")
        for probe in sorted(declared - allowed):
            wrong.append(f"postgres {identity} cannot {probe!r}, which the matrix declares")
    assert not wrong, "\n".join(wrong)


def plaintexts(value) -> Iterator[str]:
    """Every string inside the decrypted secrets of an export (`--show-secrets`
    shows a secret as {<sig>: …, "plaintext": <JSON text>})."""
    if isinstance(value, dict):
        if "plaintext" in value and isinstance(value["plaintext"], str):
            try:
                yield from strings(json.loads(value["plaintext"]))
            except ValueError:
                yield value["plaintext"]
        for inner in value.values():
            yield from plaintexts(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from plaintexts(inner)


def strings(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for inner in value.values():
            yield from strings(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from strings(inner)


def test_nothing_the_preview_can_decrypt_opens_anything(matrix_stack: MatrixStack, identities: dict[str, hvac.Client]):
    """A pull request's code decrypts every secret of the stack as the preview
    identity (it may: a preview runs the program), then tries each value as the
    password of every login on the server and as a Vault token."""
    preview_token = identities["ci-preview"].token
    exported = json.loads(
        subprocess.run(
            ["pulumi", "stack", "export", "--show-secrets", "--stack", matrix_stack.stack.name],
            cwd=matrix_stack.project_dir,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
            env={
                **os.environ,
                **matrix_stack.stack.workspace.env_vars,
                "VAULT_TOKEN": preview_token,
                "BAO_TOKEN": preview_token,
            },
        ).stdout
    )
    found = sorted({text for text in plaintexts(exported) if len(text) >= 8})
    # What it holds: at least the first password of Vault's login (dead since rotate-root).
    assert matrix_stack.vault_admin_password() in found, "the preview did not decrypt the stack's secrets"
    with admin_connect() as admin:
        logins = [name for (name,) in admin.execute("SELECT rolname FROM pg_roles WHERE rolcanlogin ORDER BY 1")]
    opened = []
    for secret in found:
        for login in logins:
            try:
                psycopg.connect(
                    host="127.0.0.1",
                    port=int(os.environ["PGPORT"]),
                    dbname="postgres",
                    user=login,
                    password=secret,
                    connect_timeout=5,
                ).close()
                opened.append(f"PostgreSQL login {login}")
            except psycopg.OperationalError:
                pass
        as_token = hvac.Client(url=os.environ["VAULT_ADDR"], token=secret, verify=os.environ["VAULT_CACERT"])
        try:
            as_token.auth.token.lookup_self()
            opened.append("a Vault token")
        except (hvac.exceptions.VaultError, ValueError):
            pass
    assert not opened, f"{len(found)} decrypted values; these opened: {opened}"


def test_an_application_stack_deploys_as_its_own_login_and_reads_no_other(tmp_path: Path):
    """The bootstrap's `--stack acme:citest:acme:tests` (local/bootstrap.sh): the
    application's CI deploy identity opens a session as pgcreds_deploy_acme, which
    logs in, and may not read the deployer's login or another application's."""
    client = ci_login("pgcreds-deploy-acme", github_token())
    env = {
        **os.environ,
        "VAULT_TOKEN": client.token,
        "PGCREDS_APPLICATION": APPLICATION,
        "PGCREDS_SESSION_DIR": str(tmp_path),
    }
    opened = subprocess.run(
        [str(REPO / "venv/bin/python"), "-m", "deployer.session"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    session = session_exports(opened)
    assert session["PGUSER"] == f"pgcreds_deploy_{APPLICATION}"
    psycopg.connect(
        host="127.0.0.1",
        port=int(os.environ["PGPORT"]),
        dbname="postgres",
        user=session["PGUSER"],
        passfile=session["PGPASSFILE"],
        connect_timeout=10,
    ).close()
    for other in ("deployer", f"deployer-{OTHER}"):
        with pytest.raises(hvac.exceptions.Forbidden):
            client.read(f"{PLATFORM_MOUNT}/static-creds/{other}")
    client.auth.token.revoke_self()
