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
reset again (`python -m deployer.aiven_service --stack NAME`, which
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
from deployer import (
    AIVEN_MOUNT,
    AIVEN_SECRET,
    DEPLOYER_LOGIN,
    PLATFORM_LOGIN,
    PLATFORM_MOUNT,
    deploy_login,
    deployer_role,
    stack_deployer_role,
)
from deployer.orphans import project_name
from providers._shared import stack_mark

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
    deploy_login: str
    """Whom the stack's program deploys as: the admin itself on a first-day stack."""

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


def stack_service(stack: str, project_dir: Path, kinds: tuple[str, ...] = ("platform",)) -> AivenService:
    """The service from the outputs of a stack of one of `kinds` in aiven mode (`pulumi
    stack output`, as the operator: the state's reader and the stack key's decrypter)."""
    shown = subprocess.run(
        ["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", stack, "--non-interactive"],
        cwd=project_dir,
        capture_output=True,
        text=True,
    )
    if shown.returncode != 0:
        raise SystemExit(
            f"bootstrap: the stack {stack}: its outputs cannot be read ({shown.stderr.strip()[-400:]}). "
            "Run this in the platform's deploy session, after its first `pulumi up`. Nothing was changed."
        )
    outputs = json.loads(shown.stdout or "{}")
    service, postgres = outputs.get("aivenService"), outputs.get("postgres") or {}
    if outputs.get("stackKind") not in kinds or not service:
        raise SystemExit(
            f"bootstrap: the stack {stack} is not a deployed stack in aiven mode of pgcreds:stackKind "
            f"{' or '.join(kinds)} (no aivenService output): set pgcreds:postgresMode aiven"
            + (" and pgcreds:stackKind platform" if kinds == ("platform",) else "")
            + ", and `pulumi up` it first. Nothing was changed."
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
        deploy_login=service.get("deployLogin") or service["adminUser"],
    )


def aiven_token(client: hvac.Client) -> tuple[str, str]:
    """(API address, token): the long-lived one in Vault, else AIVEN_TOKEN (the run's)."""
    try:
        stored = client.read(f"{AIVEN_MOUNT}/data/{AIVEN_SECRET}")
    except (hvac.exceptions.InvalidPath, hvac.exceptions.Forbidden):
        stored = None
    if stored:
        return aiven_api.stored_token(stored["data"]["data"])
    if not os.environ.get("AIVEN_TOKEN"):
        raise SystemExit(
            f"bootstrap: no Aiven API token: neither {AIVEN_MOUNT}/{AIVEN_SECRET} in Vault (--aiven-token-file) "
            "nor AIVEN_TOKEN. Nothing was changed."
        )
    return os.environ.get("AIVEN_WEB_URL") or aiven_api.DEFAULT_API_URL, os.environ["AIVEN_TOKEN"]


def service_postgres(service: AivenService, logins: list[str], mark: str = "") -> None:
    """Vault's login and the deploy logins on the service, made as its admin; with
    `mark` (a single stack handed over), the deploy login also gets every role that
    carries the stack's mark in its comment, WITH ADMIN OPTION, so that it manages
    what the admin made as the program did (PostgreSQL 16+: only so)."""
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
        for login in logins:
            ensure_deploy_login(admin, login, [service.database])
            grant_schema_rights(admin, login)
        marked = (
            [
                name
                for (name,) in admin.execute(
                    "SELECT rolname FROM pg_roles WHERE shobj_description(oid, 'pg_authid') = %s", (mark,)
                )
            ]
            if mark
            else []
        )
        for role in marked:
            for login in logins:
                admin.execute(
                    sql.SQL("GRANT {} TO {} WITH ADMIN OPTION").format(sql.Identifier(role), sql.Identifier(login))
                )
        if marked:
            say(f"{', '.join(logins)} now hold{'s' if len(logins) == 1 else ''} the stack's {len(marked)} roles")
            for login in logins:
                regrant_schema_privileges(admin, login, marked)
        ensure_role(admin, PLATFORM_LOGIN, "LOGIN CREATEROLE NOSUPERUSER NOCREATEDB NOREPLICATION")
        if admin.info.server_version >= 160000:
            for login in logins:
                grant_admin_option(admin, login, PLATFORM_LOGIN)


def regrant_schema_privileges(admin: psycopg.Connection, login: str, marked: list[str]) -> None:
    """What the admin granted the stack's roles on schemas they do not own (CREATE on
    `public`, for the table owner), granted again by `login` and revoked as the admin:
    the deploy login can then revoke it, and so drop those roles (`DROP OWNED` revokes
    only what its caller may; a grant of the admin's would keep the role alive)."""
    held = admin.execute(
        "SELECT n.nspname, r.rolname, a.privilege_type FROM pg_namespace n "
        "CROSS JOIN LATERAL aclexplode(n.nspacl) a JOIN pg_roles r ON r.oid = a.grantee "
        "WHERE r.rolname = ANY(%s) AND a.grantor <> (SELECT oid FROM pg_roles WHERE rolname = %s) "
        "AND pg_get_userbyid(n.nspowner) <> ALL(%s)",
        (marked, login, marked),
    ).fetchall()
    if not held:
        return
    with admin.transaction():
        admin.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(login)))
        admin.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(login)))
        for schema, role, privilege in held:
            admin.execute(
                sql.SQL("GRANT {} ON SCHEMA {} TO {}").format(
                    sql.SQL(privilege), sql.Identifier(schema), sql.Identifier(role)
                )
            )
        admin.execute("RESET ROLE")
        # (no longer a member of the login first: the revoke must be the admin's own)
        admin.execute(sql.SQL("REVOKE {} FROM CURRENT_USER").format(sql.Identifier(login)))
        for schema, role, privilege in held:
            admin.execute(
                sql.SQL("REVOKE {} ON SCHEMA {} FROM {}").format(
                    sql.SQL(privilege), sql.Identifier(schema), sql.Identifier(role)
                )
            )
    say(f"{login} granted again what the admin had granted the stack's roles on schemas ({len(held)})")


def service_vault(service: AivenService, static_roles: dict[str, str], client: hvac.Client, rotation: int) -> None:
    """Vault's connection to the service and the deploy logins' static roles (role: login)."""
    from deployer.bootstrap import write_platform_connection
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
    roles = sorted(static_roles)
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
    write_platform_connection(
        client, service.connection, url, password, roles, tls_ca=service.ca_pem if verifies_tls_ca else None
    )
    say(f"Vault connection {PLATFORM_MOUNT}/config/{service.connection} made (verify-full), its password rotated")
    for role, login in static_roles.items():
        client.write(
            f"{PLATFORM_MOUNT}/static-roles/{role}",
            db_name=service.connection,
            username=login,
            rotation_period=rotation,
        )
        say(f"static role {PLATFORM_MOUNT}/static-roles/{role} ({login}) on the service")


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
    """A platform's service: the applications' deploy logins there, then the reset."""
    service = stack_service(args.aiven_platform_stack, Path(args.project_dir))
    service_postgres(service, [deploy_login(application) for application in applications])
    roles = {deployer_role(application): deploy_login(application) for application in applications}
    service_vault(service, roles, client, args.deployer_rotation_seconds)
    reset_admin(service, client)
    return service


def hand_over_stack(args: argparse.Namespace, client: hvac.Client) -> AivenService:
    """A first-day single stack's service, handed over to a deploy login of its own:
    `pgcreds_deployer` there (static role `deployer-stack-<stack>`), which gets the
    roles the program made as the admin; the stack's `postgresAdminUser` then names
    it, so the next `up` logs in as the deploy session's login; then the reset."""
    stack, project_dir = args.aiven_stack, Path(args.project_dir)
    service = stack_service(stack, project_dir, kinds=("all",))
    if service.deploy_login != service.admin_user:
        say(f"the stack {stack} already deploys as {service.deploy_login} on its service: only the reset is left")
    else:
        service_postgres(service, [DEPLOYER_LOGIN], mark=stack_mark(project_name(project_dir), stack))
        service_vault(service, {stack_deployer_role(stack): DEPLOYER_LOGIN}, client, args.deployer_rotation_seconds)
        configured = subprocess.run(
            ["pulumi", "config", "set", "pgcreds:postgresAdminUser", DEPLOYER_LOGIN, "--stack", stack],
            cwd=project_dir,
            capture_output=True,
            text=True,
        )
        if configured.returncode != 0:
            raise SystemExit(f"bootstrap: pgcreds:postgresAdminUser was not set: {configured.stderr.strip()}")
        say(
            f"pgcreds:postgresAdminUser is {DEPLOYER_LOGIN} in Pulumi.{stack}.yaml (commit it): the next `pulumi up`, "
            "in the stack's deploy session (--aiven, PGCREDS_STACK), logs in as it"
        )
    reset_admin(service, client)
    return service


def main(argv: list[str]) -> int:
    """`python -m deployer.aiven_service --stack NAME`: the reset alone, which a deploy
    of a stack in aiven mode runs after its `pulumi up` (ci/deploy.sh); nothing for a
    first-day stack, which still deploys as the admin."""
    from clients.tls import operator_token, vault_tls_verify

    parser = argparse.ArgumentParser(description="Have Aiven reset the stack's service admin's password.")
    parser.add_argument("--stack", required=True, help="a platform stack, or a single stack handed over")
    parser.add_argument("--project-dir", default=str(REPO))
    args = parser.parse_args(argv)
    client = hvac.Client(url=os.environ.get("VAULT_ADDR", ""), token=operator_token(), verify=vault_tls_verify())
    service = stack_service(args.stack, Path(args.project_dir), kinds=("platform", "all"))
    if service.deploy_login == service.admin_user:
        say(f"the stack {args.stack} deploys as {service.admin_user} (a first-day stack): its password is not reset")
        return 0
    reset_admin(service, client)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
