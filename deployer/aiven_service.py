"""The bootstrap of an Aiven service that a platform stack made, run once by the
operator after the platform's first `pulumi up` (and by every deploy of that
platform, for the last step alone):

    make bootstrap BOOTSTRAP_ARGS="--aiven-platform-stack platform \\
        --stack billing:database:billing:platform --repository my-org/pg-dynamic-creds"

It reads the service's endpoint, CA and admin login (`avnadmin`) from the platform
stack's outputs, as the operator (nobody copies a password), and makes there what
the application stacks deploy with:
- PostgreSQL: `pgcreds_vault_platform`, the login Vault manages the others with,
  and each application's deploy login `pgcreds_deploy_<application>` (CREATEROLE,
  CREATE in the service's database);
- Vault: the connection `pgcreds-platform/config/aiven-<service>` as
  `pgcreds_vault_platform` (verify-full against the project's CA; its password
  rotated at once), the static role `deployer-<application>` of each deploy login,
  and each application stack's transit key, policies and jwt roles.
Last, Aiven resets the admin's password (a service user credential reset): the
copy in the platform's state, which the platform's readers can decrypt, no longer
opens the service. Every platform `pulumi up` may read the new one into the state
(Aiven returns it with the service), so a deploy of the platform ends with the
reset again (`python -m deployer.aiven_service --platform-stack NAME`, which
ci/deploy.sh runs).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import hvac
import hvac.exceptions
import psycopg
from psycopg import sql

from clients import aiven_api
from clients.tls import ca_file
from deployer import AIVEN_MOUNT, AIVEN_SECRET, PLATFORM_LOGIN, PLATFORM_MOUNT, deploy_login, deployer_role

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class AivenService:
    """The platform stack's service, as its outputs give it."""

    project: str
    name: str
    host: str
    port: int
    database: str
    ca_pem: str
    vault_ca_path: str
    admin_user: str
    admin_password: str

    @property
    def connection(self) -> str:
        """Vault's connection to it in the platform engine."""
        return f"aiven-{self.name}"

    def connect(self, password: str | None = None) -> psycopg.Connection:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            dbname=self.database,
            user=self.admin_user,
            password=password or self.admin_password,
            sslmode="verify-full",
            sslrootcert=ca_file(self.ca_pem),
            connect_timeout=10,
            autocommit=True,
            application_name="pgcreds-bootstrap",
        )


def say(message: str) -> None:
    print(f"bootstrap: {message}", file=sys.stderr)


def platform_service(stack: str, project_dir: Path) -> AivenService:
    """The service from the platform stack's outputs (`pulumi stack output`, as the
    operator: the state's reader and the stack key's decrypter)."""
    shown = subprocess.run(
        ["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", stack, "--non-interactive"],
        cwd=project_dir,
        capture_output=True,
        text=True,
    )
    if shown.returncode != 0:
        raise SystemExit(
            f"bootstrap: --aiven-platform-stack {stack}: its outputs cannot be read ({shown.stderr.strip()[-400:]}). "
            "Run this in the platform's deploy session, after its first `pulumi up`. Nothing was changed."
        )
    outputs = json.loads(shown.stdout or "{}")
    service, postgres = outputs.get("aivenService"), outputs.get("postgres") or {}
    if outputs.get("stackKind") != "platform" or not service:
        raise SystemExit(
            f"bootstrap: --aiven-platform-stack {stack} is not a platform stack in aiven mode that was deployed "
            "(no aivenService output): set pgcreds:stackKind platform and pgcreds:postgresMode aiven, and "
            "`pulumi up` it first. Nothing was changed."
        )
    return AivenService(
        project=service["project"],
        name=service["serviceName"],
        host=postgres["host"],
        port=int(postgres["port"]),
        database=postgres["database"],
        ca_pem=postgres.get("sslrootcert_pem") or "",
        vault_ca_path=postgres.get("vaultSslRootCert") or "",
        admin_user=service["adminUser"],
        admin_password=service["adminPassword"],
    )


def aiven_token(client: hvac.Client) -> tuple[str, str]:
    """(API address, token): the long-lived one in Vault, else AIVEN_TOKEN (the run's)."""
    try:
        stored = client.secrets.kv.v2.read_secret_version(
            path=AIVEN_SECRET, mount_point=AIVEN_MOUNT, raise_on_deleted_version=True
        )["data"]["data"]
        return stored.get("api_url") or aiven_api.DEFAULT_API_URL, stored["token"]
    except (hvac.exceptions.InvalidPath, hvac.exceptions.Forbidden):
        pass
    if not os.environ.get("AIVEN_TOKEN"):
        raise SystemExit(
            f"bootstrap: no Aiven API token: neither {AIVEN_MOUNT}/{AIVEN_SECRET} in Vault (--aiven-token-file) "
            "nor AIVEN_TOKEN. Nothing was changed."
        )
    return os.environ.get("AIVEN_WEB_URL") or aiven_api.DEFAULT_API_URL, os.environ["AIVEN_TOKEN"]


def service_postgres(service: AivenService, applications: list[str]) -> None:
    """Vault's login and each application's deploy login on the service, made as its admin."""
    from deployer.bootstrap import ensure_deploy_login, ensure_role, grant_admin_option, grant_schema_rights

    try:
        admin = service.connect()
    except psycopg.OperationalError as error:
        refused = "password authentication failed" in str(error)
        raise SystemExit(
            f"bootstrap: the Aiven service {service.name!r} at {service.host}:{service.port} refused its admin "
            f"{service.admin_user!r} with the password in the platform's outputs ({str(error).strip()[:200]}). "
            + (
                "An earlier bootstrap reset it: `pulumi refresh --stack <platform>` reads the current one into the "
                "state, then run this again. "
                if refused
                else ""
            )
            + "Nothing was changed."
        ) from None
    with admin:
        logins = [deploy_login(application) for application in applications]
        for login in logins:
            ensure_deploy_login(admin, login, [service.database])
            grant_schema_rights(admin, login)
        ensure_role(admin, PLATFORM_LOGIN, "LOGIN CREATEROLE NOSUPERUSER NOCREATEDB NOREPLICATION")
        if admin.info.server_version >= 160000:
            for login in logins:
                grant_admin_option(admin, login, PLATFORM_LOGIN)


def service_vault(service: AivenService, applications: list[str], client: hvac.Client, rotation: int) -> None:
    """Vault's connection to the service and the deploy logins' static roles."""
    from preflight import vault_server

    verifies_tls_ca = vault_server(client.sys.read_health_status(method="GET")).verifies_tls_ca
    if not verifies_tls_ca and not service.vault_ca_path:
        raise SystemExit(
            "bootstrap: this Vault reads a connection's CA only from a file on its own host (OpenBao), and the "
            "platform stack names none: place the project's CA there (`avn project ca-get --project "
            f"{service.project} --target-filepath <path>`), set pgcreds:vaultSslRootCert on the platform stack, "
            "`pulumi up` it, and run this again. Nothing was changed."
        )
    ca = "" if verifies_tls_ca else f"&sslrootcert={service.vault_ca_path}"
    url = (
        f"postgresql://{{{{username}}}}:{{{{password}}}}@{service.host}:{service.port}/{service.database}"
        f"?sslmode=verify-full{ca}"
    )
    roles = [deployer_role(application) for application in applications]
    try:
        current = client.secrets.database.read_connection(service.connection, mount_point=PLATFORM_MOUNT)["data"]
        roles = sorted({*(current.get("allowed_roles") or []), *roles})
    except hvac.exceptions.InvalidPath:
        pass
    # Known here only until Vault's rotate-root below replaces it.
    password = secrets.token_urlsafe(30)
    with service.connect() as admin:
        admin.execute(
            sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(sql.Identifier(PLATFORM_LOGIN), sql.Literal(password))
        )
    client.secrets.database.configure(
        service.connection,
        "postgresql-database-plugin",
        mount_point=PLATFORM_MOUNT,
        connection_url=url,
        username=PLATFORM_LOGIN,
        password=password,
        password_authentication="scram-sha-256",
        allowed_roles=roles,
        verify_connection=True,
        **({"tls_ca": service.ca_pem} if verifies_tls_ca else {}),
    )
    client.secrets.database.rotate_root_credentials(service.connection, mount_point=PLATFORM_MOUNT)
    say(f"Vault connection {PLATFORM_MOUNT}/config/{service.connection} made (verify-full), its password rotated")
    for application in applications:
        client.write(
            f"{PLATFORM_MOUNT}/static-roles/{deployer_role(application)}",
            db_name=service.connection,
            username=deploy_login(application),
            rotation_period=rotation,
        )
        say(f"static role {PLATFORM_MOUNT}/static-roles/{deployer_role(application)} on the service")


def reset_admin(service: AivenService, client: hvac.Client) -> None:
    """Aiven sets a new password for the service's admin; the old one (the copy in the
    platform's state) is then refused by the service, which is checked."""
    api_url, token = aiven_token(client)
    try:
        aiven_api.reset_service_password(api_url, token, service.project, service.name, service.admin_user)
    except aiven_api.AivenApiError as error:
        raise SystemExit(f"bootstrap: the admin's password was not reset: {error}") from None
    try:
        service.connect().close()
    except psycopg.OperationalError as error:
        if "password authentication failed" not in str(error):
            raise SystemExit(f"bootstrap: the service did not answer after the reset: {error}") from None
        say(
            f"{service.admin_user}'s password on {service.name} was reset by Aiven: the copy in the platform's "
            "state no longer opens the service"
        )
        return
    raise SystemExit(f"bootstrap: Aiven reset {service.admin_user}'s password, but the old one still opens the service")


def bootstrap_service(args: argparse.Namespace, client: hvac.Client, applications: list[str]) -> AivenService:
    service = platform_service(args.aiven_platform_stack, Path(args.project_dir))
    service_postgres(service, applications)
    service_vault(service, applications, client, args.deployer_rotation_seconds)
    reset_admin(service, client)
    return service


def main(argv: list[str]) -> int:
    """`python -m deployer.aiven_service --platform-stack NAME`: the reset alone, which
    a deploy of an Aiven platform runs after its `pulumi up` (ci/deploy.sh)."""
    from clients.tls import operator_token, vault_tls_verify

    parser = argparse.ArgumentParser(description="Have Aiven reset the platform service admin's password.")
    parser.add_argument("--platform-stack", required=True)
    parser.add_argument("--project-dir", default=str(REPO))
    args = parser.parse_args(argv)
    client = hvac.Client(url=os.environ.get("VAULT_ADDR", ""), token=operator_token(), verify=vault_tls_verify())
    reset_admin(platform_service(args.platform_stack, Path(args.project_dir)), client)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
