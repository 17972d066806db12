"""Aiven in the split layout, end to end: the platform stack makes the service
(against the Aiven stand-in, whose services live on a PostgreSQL server of their
own with a CA of its own), the bootstrap reads the service's endpoint and admin
login from the platform's outputs and makes Vault's login and the application's
deploy login there, Aiven resets the admin's password (the platform state's copy
is refused by the service), and the application stack deploys on Vault-issued
logins alone, its credentials verified against the project's CA."""

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
from pulumi import automation as auto
from test_aiven import PROJECT, aiven_settings, stop_stand_in

from aiven_standin.server import AivenStandIn
from clients import aiven_api
from clients.tls import ca_file
from deployer import AIVEN_MOUNT, AIVEN_SECRET, PLATFORM_MOUNT, application_login, deployer_role, transit_key
from deployer.bootstrap import bootstrap_aiven_token
from program_copy import add_tables, copy_program
from sourced_env import file_backend
from stacks import REPO, PgServer, ProgramStack, application_roles, vault

pytestmark = pytest.mark.both_servers  # and again on HashiCorp Vault (make test-vault): tls_ca there


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


def workspace_stack(name: str, project_dir: Path, env: dict[str, str]) -> auto.Stack:
    key = transit_key(name)
    if key not in (vault().list("transit/keys") or {}).get("data", {}).get("keys", []):
        vault().secrets.transit.create_key(key, mount_point="transit")
    return auto.create_or_select_stack(
        stack_name=name,
        work_dir=str(project_dir),
        opts=auto.LocalWorkspaceOptions(secrets_provider=f"hashivault://{key}", env_vars=env),
    )


def test_an_aiven_platform_and_an_application_on_vault_issued_logins_alone(
    service_server: tuple[PgServer, Path], tmp_path: Path
):
    server, ca_path = service_server
    assert server.superuser_password_file.exists(), server
    suffix = secrets.token_hex(3)
    application = f"a{suffix}"
    platform_name, application_stack = f"it{suffix}-platform", f"it{suffix}-{application}"
    mount = f"it-{suffix}"
    project_dir = copy_program(tmp_path / "project")
    add_tables(project_dir, [f"{application}_items"])
    state = tmp_path / "state"
    stand_in = AivenStandIn(
        PROJECT,
        token=secrets.token_urlsafe(16),
        pg_host="127.0.0.1",
        pg_port=server.port,
        ca_pem=ca_path.read_text(),
        superuser=server.connect,
    ).start()
    # The long-lived token in Vault, as `make bootstrap --aiven-token-file` leaves it.
    bootstrap_aiven_token(argparse.Namespace(aiven_api_url=stand_in.url), vault(), stand_in.token)
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
        bootstrapped = subprocess.run(
            [str(REPO / "venv" / "bin" / "python"), "-m", "deployer.bootstrap"]
            + ["--aiven-platform-stack", platform_name, "--project-dir", str(project_dir)]
            + ["--stack", f"{application_stack}:{mount}:{application}:{platform_name}"]
            + ["--repository", "local/pg-dynamic-creds"]
            + ["--jwt-pubkey", str(Path(os.environ["PGCREDS_LOCAL_DIR"]) / "ci-oidc" / "issuer.pub.pem")],
            cwd=REPO,
            env={**os.environ, **file_backend(state), "PULUMI_BACKEND_URL": file_backend(state)["PULUMI_BACKEND_URL"]},
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        print("\nthe service bootstrap says:\n" + bootstrapped.stderr[-2500:])
        assert bootstrapped.returncode == 0, bootstrapped.stderr[-3000:]
        assert first_password not in bootstrapped.stdout + bootstrapped.stderr
        # Aiven reset the admin's password: the copy in the platform's state opens nothing.
        assert service.admin_password != first_password
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(
                host="127.0.0.1",
                port=server.port,
                dbname=service.database,
                user=service.admin_user,
                password=first_password,
                sslmode="verify-full",
                sslrootcert=str(ca_path),
            ).close()
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
        issued = vault().secrets.database.generate_credentials(roles[0]["name"], mount_point=mount)["data"]
        with psycopg.connect(
            host="127.0.0.1",
            port=server.port,
            dbname=service.database,
            user=issued["username"],
            password=issued["password"],
            sslmode="verify-full",
            sslrootcert=ca_file(ca_path.read_text()),
        ) as credential:
            assert credential.execute(f"SELECT count(*) FROM {application}_items").fetchone() is not None

        app.destroy()
        platform.destroy()
        assert stand_in.services == {} and stand_in.unknown == []
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
        client.secrets.kv.v2.delete_metadata_and_all_versions(path=AIVEN_SECRET, mount_point=AIVEN_MOUNT)
        stop_stand_in(stand_in)
