"""Aiven with no live admin password, end to end, against the Aiven stand-in
(whose services live on a PostgreSQL server of their own, with a CA of its own).

The split layout: the platform stack makes the service, the bootstrap reads the
service's endpoint and admin login from the platform's outputs and makes Vault's
login and the application's deploy login there, Aiven resets the admin's password
(the platform state's copy is refused by the service), and the application stack
deploys on Vault-issued logins alone, its credentials verified against the
project's CA. A single first-day stack is handed over by one command the same way."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from pulumi import automation as auto

from aiven_standin.server import AivenStandIn
from clients import aiven_api
from deployer import (
    AIVEN_MOUNT,
    AIVEN_SECRET,
    DEPLOYER_LOGIN,
    PLATFORM_MOUNT,
    application_login,
    deployer_role,
    stack_deployer_role,
    transit_key,
)
from deployer.bootstrap import bootstrap_aiven_token
from program_copy import add_tables, copy_program
from sourced_env import file_backend
from stacks import PROJECT, REPO, PgServer, ProgramStack, aiven_settings, application_roles, stop_stand_in, vault


@pytest.fixture(scope="module")
def service_server() -> Iterator[tuple[PgServer, Path]]:
    """A PostgreSQL server of its own for the stand-in's services, with TLS and a CA of
    its own (the Aiven project's): the bootstrap makes logins there under the names it
    uses on the state database's server, as on a real service."""
    folder = Path(tempfile.mkdtemp(prefix="pgcreds-aiven-", dir="/var/tmp"))
    folder.chmod(0o755)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PGCREDS_LOCAL_DIR": str(folder), "PGCREDS_PG_VERSION": "15", "PGCREDS_PG_PORT": str(port)}
    script = str(REPO / "local" / "postgres.sh")
    subprocess.run([script, "start"], env=env, check=True, capture_output=True)
    try:
        yield PgServer("15", port, folder / "postgres" / "superuser.password"), folder / "tls" / "ca.pem"
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def aiven(service_server: tuple[PgServer, Path]) -> Iterator[tuple[PgServer, Path, AivenStandIn]]:
    """The stand-in serving the module's services on that server, and the long-lived
    token in Vault, as `make bootstrap --aiven-token-file` leaves it."""
    server, ca_path = service_server
    stand_in = AivenStandIn(
        PROJECT,
        token=secrets.token_urlsafe(16),
        pg_host="127.0.0.1",
        pg_port=server.port,
        ca_pem=ca_path.read_text(),
        superuser=server.connect,
    ).start()
    bootstrap_aiven_token(argparse.Namespace(aiven_api_url=stand_in.url), vault(), stand_in.token)
    yield server, ca_path, stand_in
    vault().secrets.kv.v2.delete_metadata_and_all_versions(path=AIVEN_SECRET, mount_point=AIVEN_MOUNT)
    stop_stand_in(stand_in)


def bootstrap(project_dir: Path, state: Path, *args: str) -> subprocess.CompletedProcess:
    """`make bootstrap` as the operator, the stacks' state in `state`."""
    return subprocess.run(
        [str(REPO / "venv" / "bin" / "python"), "-m", "deployer.bootstrap", *args]
        + ["--project-dir", str(project_dir), "--repository", "local/pg-dynamic-creds"]
        + ["--jwt-pubkey", str(Path(os.environ["PGCREDS_LOCAL_DIR"]) / "ci-oidc" / "issuer.pub.pem")],
        cwd=REPO,
        env={**os.environ, **file_backend(state)},
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def refused_login(server: PgServer, ca_path: Path, database: str, user: str, password: str) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host="127.0.0.1",
            port=server.port,
            dbname=database,
            user=user,
            password=password,
            sslmode="verify-full",
            sslrootcert=str(ca_path),
        ).close()


def credential_reads(server: PgServer, ca_path: Path, database: str, role: str, mount: str, table: str) -> int:
    """A credential Vault issues for `role` logs in to the service, verified against the
    project's CA, and reads `table`: its row count."""
    issued = vault().secrets.database.generate_credentials(role, mount_point=mount)["data"]
    with psycopg.connect(
        host="127.0.0.1",
        port=server.port,
        dbname=database,
        user=issued["username"],
        password=issued["password"],
        sslmode="verify-full",
        sslrootcert=str(ca_path),
    ) as credential:
        return credential.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]


def workspace_stack(name: str, project_dir: Path, env: dict[str, str]) -> auto.Stack:
    key = transit_key(name)
    if key not in (vault().list("transit/keys") or {}).get("data", {}).get("keys", []):
        vault().secrets.transit.create_key(key, mount_point="transit")
    return auto.create_or_select_stack(
        stack_name=name,
        work_dir=str(project_dir),
        opts=auto.LocalWorkspaceOptions(secrets_provider=f"hashivault://{key}", env_vars=env),
    )


@pytest.mark.both_servers  # and again on HashiCorp Vault (make test-vault): the CA in tls_ca there
def test_an_aiven_platform_and_an_application_on_vault_issued_logins_alone(
    aiven: tuple[PgServer, Path, AivenStandIn], tmp_path: Path
):
    server, ca_path, stand_in = aiven
    suffix = secrets.token_hex(3)
    application = f"a{suffix}"
    platform_name, application_stack = f"it{suffix}-platform", f"it{suffix}-{application}"
    mount = f"it-{suffix}"
    project_dir = copy_program(tmp_path / "project")
    add_tables(project_dir, [f"{application}_items"])
    state = tmp_path / "state"
    run_token = aiven_api.mint_token(stand_in.url, stand_in.token, "the platform's run")
    platform = workspace_stack(
        platform_name,
        project_dir,
        {**file_backend(state), "AIVEN_WEB_URL": stand_in.url, "AIVEN_TOKEN": run_token.full_token},
    )
    platform_stack = ProgramStack(platform, project_dir, suffix, "", state, server)
    app: auto.Stack | None = None
    try:
        platform_stack.set(
            **aiven_settings(platform_stack),
            environment="dev",
            stackKind="platform",
            roles=[],
            vaultAddress=os.environ["VAULT_ADDR"],
            vaultMountPath=mount,
            vaultSslRootCert=str(ca_path),  # the project's CA on Vault's host (OpenBao reads it there)
        )
        platform.up()
        (service,) = stand_in.services.values()
        first_password = service.admin_password

        # The bootstrap, as the operator: it reads the service from the platform's outputs.
        bootstrapped = bootstrap(
            project_dir,
            state,
            "--aiven-platform-stack",
            platform_name,
            "--stack",
            f"{application_stack}:{mount}:{application}:{platform_name}",
        )
        print("\nthe service bootstrap says:\n" + bootstrapped.stderr[-2500:])
        assert bootstrapped.returncode == 0, bootstrapped.stderr[-3000:]
        assert first_password not in bootstrapped.stdout + bootstrapped.stderr
        # Aiven reset the admin's password: the copy in the platform's state opens nothing.
        assert service.admin_password != first_password
        refused_login(server, ca_path, service.database, service.admin_user, first_password)
        connection = vault().secrets.database.read_connection(f"aiven-{service.name}", mount_point=PLATFORM_MOUNT)
        url = connection["data"]["connection_details"]["connection_url"]
        assert "sslmode=verify-full" in url, url

        # The application stack: its deploy login from Vault's static role, no Aiven token at all.
        login = application_login(application)
        password = vault().read(f"{PLATFORM_MOUNT}/static-creds/{deployer_role(application)}")["data"]["password"]
        pgpass = tmp_path / "pgpass"
        pgpass.write_text(f"*:*:*:{login}:{password}\n")
        pgpass.chmod(0o600)
        calls_before = len(stand_in.requests)
        app = workspace_stack(
            application_stack,
            project_dir,
            {**file_backend(state), "PGUSER": login, "PGPASSFILE": str(pgpass), "PGCREDS_SESSION_KIND": "deploy"},
        )
        for key, value in {
            "environment": "dev",
            "stackKind": "application",
            "platformStack": platform_name,
            "application": application,
            "postgresAdminUser": login,
            "postgresSslMode": "verify-full",
            "tableOwnerRole": f"{application}_owner",
            "vaultAdminRole": f"{application}_vault_admin",
            "vaultAddress": os.environ["VAULT_ADDR"],
            "vaultMountPath": mount,
            "keepTablesOnDestroy": "false",
        }.items():
            app.set_config(f"pgcreds:{key}", auto.ConfigValue(value))
        roles = application_roles(application)
        app.set_config("pgcreds:roles", auto.ConfigValue(json.dumps(roles)))
        app.up()
        assert len(stand_in.requests) == calls_before  # an application stack never calls Aiven

        # A credential Vault issues logs in to the service, verified against the project's CA.
        credential_reads(server, ca_path, service.database, roles[0]["name"], mount, f"{application}_items")

        app.destroy()
        platform.destroy()
        assert service.name not in stand_in.services and stand_in.unknown == []
    finally:
        for stack in (app, platform):
            if stack is not None:
                try:
                    stack.destroy()
                except auto.CommandError:
                    pass
        client = vault()
        for path in (
            f"{PLATFORM_MOUNT}/static-roles/{deployer_role(application)}",
            *(f"{PLATFORM_MOUNT}/config/aiven-{name}" for name in [f"pg-{suffix}"]),
        ):
            client.delete(path)
        for policy in (f"pgcreds-deploy-{application_stack}", f"pgcreds-preview-{application_stack}"):
            client.sys.delete_acl_policy(policy)
            client.delete(f"auth/jwt/role/{policy}")
        for name in (platform_name, application_stack):
            client.write(f"transit/keys/{transit_key(name)}/config", deletion_allowed=True)
            client.delete(f"transit/keys/{transit_key(name)}")
        for kind in ("", "-approle"):
            if f"{mount}{kind}/" in (
                client.sys.list_auth_methods()["data"] if kind else client.sys.list_mounted_secrets_engines()["data"]
            ):
                (client.sys.disable_auth_method if kind else client.sys.disable_secrets_engine)(f"{mount}{kind}")


@pytest.mark.vault_half  # (in the shorter half: its Vault side is the split test's, run on both)
def test_a_first_day_stack_is_handed_over_by_one_command(aiven: tuple[PgServer, Path, AivenStandIn], tmp_path: Path):
    """A single aiven stack made on its first day (the program logs in as the service's
    admin) is handed over by `make bootstrap --aiven-stack`: its next `up` logs in as
    a deploy login Vault rotates, changes no object, and the admin's old password is
    refused; the stack then lives and is destroyed without it."""
    server, ca_path, stand_in = aiven
    suffix = secrets.token_hex(3)
    name, mount = f"it{suffix}", f"it-{suffix}"
    project_dir, state = copy_program(tmp_path / "project"), tmp_path / "state"
    run_token = aiven_api.mint_token(stand_in.url, stand_in.token, "the stack's runs")
    aiven_env = {"AIVEN_WEB_URL": stand_in.url, "AIVEN_TOKEN": run_token.full_token}
    stack = workspace_stack(name, project_dir, {**file_backend(state), **aiven_env})
    program = ProgramStack(stack, project_dir, suffix, "", state, server)
    try:
        program.set(
            **aiven_settings(program),
            environment="dev",
            vaultAddress=os.environ["VAULT_ADDR"],
            vaultMountPath=mount,
            vaultSslRootCert=str(ca_path),
            tableOwnerRole=f"it_{suffix}_owner",
            vaultAdminRole=f"it_{suffix}_vault_admin",
            sampleData="true",
            keepTablesOnDestroy="false",
            roles=program.roles_config(),
        )
        stack.up()
        (service,) = [s for s in stand_in.services.values() if s.name == f"pg-{suffix}"]
        first_password = service.admin_password
        ids_before = {r["urn"]: r.get("id") for r in stack.export_stack().deployment["resources"]}

        handed = bootstrap(project_dir, state, "--aiven-stack", name)
        print("\nthe hand-over says:\n" + handed.stderr[-2000:])
        assert handed.returncode == 0, handed.stderr[-3000:]
        assert first_password not in handed.stdout + handed.stderr
        refused_login(server, ca_path, service.database, service.admin_user, first_password)
        assert "pgcreds:postgresAdminUser: pgcreds_deployer" in (project_dir / f"Pulumi.{name}.yaml").read_text()

        # The next run is a deploy session's: the deployer's login on the service, from Vault.
        password = vault().read(f"{PLATFORM_MOUNT}/static-creds/{stack_deployer_role(name)}")["data"]["password"]
        pgpass = tmp_path / "pgpass"
        pgpass.write_text(f"*:*:*:{DEPLOYER_LOGIN}:{password}\n")
        pgpass.chmod(0o600)
        stack.workspace.env_vars.update(
            PGUSER=DEPLOYER_LOGIN, PGPASSFILE=str(pgpass), PGCREDS_SESSION_KIND="deploy", **aiven_env
        )
        changes = stack.up().summary.resource_changes
        print(f"\nthe first `up` after the hand-over: {changes}")
        assert not {"create", "delete", "replace"} & set(changes), changes
        ids_after = {r["urn"]: r.get("id") for r in stack.export_stack().deployment["resources"]}
        assert ids_after == ids_before  # the same objects, none made again
        assert set(stack.preview().change_summary) == {"same"}
        assert credential_reads(server, ca_path, service.database, program.role_name, mount, "weekly_metrics_reporting")

        # Destroyed by the deploy login: what the admin made goes too.
        stack.destroy()
        assert service.name not in stand_in.services
    finally:
        try:
            stack.destroy()
        except auto.CommandError:
            pass
        client = vault()
        client.delete(f"{PLATFORM_MOUNT}/static-roles/{stack_deployer_role(name)}")
        client.delete(f"{PLATFORM_MOUNT}/config/aiven-pg-{suffix}")
        for policy in (f"pgcreds-deploy-{name}", f"pgcreds-preview-{name}"):
            client.sys.delete_acl_policy(policy)
            client.delete(f"auth/jwt/role/{policy}")
        client.write(f"transit/keys/{transit_key(name)}/config", deletion_allowed=True)
        client.delete(f"transit/keys/{transit_key(name)}")
        for kind in ("", "-approle"):
            mounted = (
                client.sys.list_auth_methods()["data"] if kind else client.sys.list_mounted_secrets_engines()["data"]
            )
            if f"{mount}{kind}/" in mounted:
                (client.sys.disable_auth_method if kind else client.sys.disable_secrets_engine)(f"{mount}{kind}")
