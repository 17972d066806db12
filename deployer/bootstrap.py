"""The one-time bootstrap of the deploy path, run by a person who holds the
PostgreSQL server's admin password and a Vault operator token:

    make bootstrap            # the password on stdin, or in PGCREDS_BOOTSTRAP_ADMIN_PASSWORD

After it, nobody keeps a static secret to deploy: Pulumi's state lives in a
PostgreSQL database whose logins Vault issues for a few hours, each stack's
secrets are encrypted by a Vault transit key, the program logs in to PostgreSQL
as a login whose password only Vault knows (and rotates), and CI logs in to Vault
with its OIDC token. Every step is idempotent: running it again repairs what is
missing and changes nothing else. The admin password is used for this run's
statements only; it is never printed, written or handed to Vault.

What it makes:
- PostgreSQL: `pgcreds_deployer` (LOGIN CREATEROLE; CREATE in the application
  databases), the login the program uses; `pgcreds_vault_platform` (LOGIN
  CREATEROLE), the login Vault manages the others with; the state database
  `pulumi_state` with its table, owned by a NOLOGIN role, and two group roles
  (read-write, read-only) that Vault's state users are made members of.
- Vault: the `pgcreds-platform` database engine (connection as
  `pgcreds_vault_platform`, its password rotated at once so that only Vault knows
  it; the static role `deployer`; the dynamic roles `state-write`, `state-read`),
  the `transit` engine with one key per stack, the deploy and preview policies of
  each stack, and the `jwt` auth method with a deploy and a preview role per stack;
  with --aiven-token-file, the Aiven API's long-lived token in the KV engine
  `pgcreds-aiven` (`api`), which only the deploy policies of stacks that are not
  application stacks may read.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

import hvac
import hvac.exceptions
import psycopg
from psycopg import sql

from clients import aiven_api
from clients.names import APPLICATION_NAME, MOUNT_NAME, STACK_NAME
from clients.postgres import scalar
from clients.state_blob import state_blob
from clients.tls import operator_token, vault_tls_verify
from deployer import (
    AIVEN_MOUNT,
    AIVEN_SECRET,
    DEPLOYER_ROLE,
    JWT_MOUNT,
    PLATFORM_CONNECTION,
    PLATFORM_LOGIN,
    PLATFORM_MOUNT,
    PREVIEW_ROLE,
    RESERVED_MOUNTS,
    STATE_DATABASE,
    STATE_OWNER,
    STATE_READ_ROLE,
    STATE_READERS,
    STATE_TABLE,
    STATE_WRITE_ROLE,
    STATE_WRITERS,
    TRANSIT_MOUNT,
    deploy_login,
    deployer_role,
    keys,
    secrets_provider,
    transit_key,
)

REPO = Path(__file__).resolve().parents[1]
PASSWORD_ENV = "PGCREDS_BOOTSTRAP_ADMIN_PASSWORD"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
# How long the deployer's password lives before Vault rotates it, and how long a
# CI token and a state login live.
DEPLOYER_ROTATION_SECONDS = 24 * 3600
CI_TOKEN_TTL = "1h"
# The deploy workflow's job for many application stacks at once (write_fleet_roles).
FLEET_ROLE = "pgcreds-fleet"
STATE_LOGIN_TTL, STATE_LOGIN_MAX_TTL = "2h", "12h"

# Pulumi's `postgres://` backend makes this table itself when it may; made here,
# owned by a role that never logs in, so that its users need no CREATE at all.
STATE_TABLE_DDL = """CREATE TABLE IF NOT EXISTS {table} (
    key TEXT PRIMARY KEY,
    data JSON NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS {index} ON {table} (key text_pattern_ops)"""

PLATFORM_ROLES = [DEPLOYER_ROLE, STATE_WRITE_ROLE, STATE_READ_ROLE, PREVIEW_ROLE]
STATE_USER_CREATION = (
    "CREATE ROLE \"{{{{name}}}}\" WITH LOGIN PASSWORD '{{{{password}}}}' "
    "VALID UNTIL '{{{{expiration}}}}' IN ROLE {group};"
)
# The state users own nothing (rows are not owned), so dropping the role is all;
# one that is already gone is not an error, so a lease can always be revoked.
STATE_USER_REVOCATION = """DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = '{{name}}') THEN
    EXECUTE format('DROP ROLE %I', '{{name}}');
  END IF;
END
$$;"""


# A preview's PostgreSQL login: a pull request's own code runs with it, so it is
# a member of nothing and owns nothing; it may connect where PUBLIC may and read
# the catalogs (what a refresh and the privilege audit read), and its sessions
# start read-only. It lives for one preview.
PREVIEW_USER_CREATION = (
    'CREATE ROLE "{{name}}" WITH LOGIN NOINHERIT NOCREATEROLE NOCREATEDB '
    "PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
    'ALTER ROLE "{{name}}" SET default_transaction_read_only = on;',
)
PREVIEW_LOGIN_TTL, PREVIEW_LOGIN_MAX_TTL = "1h", "2h"


def say(message: str) -> None:
    print(f"bootstrap: {message}", file=sys.stderr)


# --- PostgreSQL ---------------------------------------------------------------


def pg_connect(args: argparse.Namespace, password: str, database: str) -> psycopg.Connection:
    try:
        return psycopg.connect(
            host=args.pg_host,
            port=args.pg_port,
            dbname=database,
            user=args.pg_admin_user,
            password=password,
            sslmode=args.pg_sslmode,
            sslrootcert=args.pg_sslrootcert or None,
            connect_timeout=10,
            autocommit=True,
            application_name="pgcreds-bootstrap",
        )
    except psycopg.OperationalError as error:
        raise SystemExit(
            f"bootstrap: cannot log in to PostgreSQL at {args.pg_host}:{args.pg_port} as "
            f"{args.pg_admin_user!r} (database {database!r}): {str(error).strip()}. Check the admin "
            f"password (stdin or {PASSWORD_ENV}) and --pg-host/--pg-port. Nothing was changed."
        ) from None


# Attributes only a superuser may name in ALTER ROLE (even to turn them off); a role
# made by a non-superuser admin (Aiven's avnadmin) cannot hold them anyway.
SUPERUSER_ATTRIBUTES = ("NOSUPERUSER", "NOREPLICATION", "NOBYPASSRLS")


def ensure_role(admin: psycopg.Connection, name: str, attributes: str) -> None:
    exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
    verb = "ALTER" if exists else "CREATE"
    if exists and not scalar(admin, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
        attributes = " ".join(word for word in attributes.split() if word not in SUPERUSER_ATTRIBUTES)
    admin.execute(sql.SQL(f"{verb} ROLE {{}} WITH {attributes}").format(sql.Identifier(name)))
    if not exists:
        say(f"PostgreSQL role {name} created ({attributes})")


def grant_admin_option(admin: psycopg.Connection, role: str, to: str) -> None:
    """PostgreSQL 16 and later: a CREATEROLE login may grant, alter and drop only
    the roles it holds ADMIN OPTION on (and 16 records who granted it). Given
    without INHERIT or SET, so that Vault's login cannot use what the role may do."""
    admin.execute(
        sql.SQL("GRANT {} TO {} WITH ADMIN TRUE, INHERIT FALSE, SET FALSE").format(
            sql.Identifier(role), sql.Identifier(to)
        )
    )


def ensure_deploy_login(admin: psycopg.Connection, login: str, databases: list[str]) -> None:
    """A login Pulumi deploys as: it makes roles (CREATEROLE) and tables in the
    application databases; the next step gives it CREATE on their `public`."""
    ensure_role(admin, login, "LOGIN CREATEROLE NOSUPERUSER NOCREATEDB NOREPLICATION")
    for database in databases:
        admin.execute(
            sql.SQL("GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {} TO {}").format(
                sql.Identifier(database), sql.Identifier(login)
            )
        )


def grant_schema_rights(database_admin: psycopg.Connection, login: str) -> None:
    """PostgreSQL 15 took CREATE on `public` from everyone; the tables go there, and
    their owner role needs it too (handed on by the deploy login, hence GRANT OPTION)."""
    database_admin.execute(
        sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {} WITH GRANT OPTION").format(sql.Identifier(login))
    )


def applications_of(args: argparse.Namespace) -> list[str]:
    """The applications of the application stacks named by --stack."""
    return sorted({spec.application for spec in map(StackSpec.parse, args.stack) if spec.application})


def deploy_logins(args: argparse.Namespace) -> list[str]:
    """The deployer's login, and each application stack's own."""
    return [deploy_login(application) for application in ("", *applications_of(args))]


def bootstrap_postgres(args: argparse.Namespace, password: str) -> None:
    """Roles, the deploy logins' rights in the application databases, the state database."""
    logins = deploy_logins(args)
    with pg_connect(args, password, args.pg_admin_database) as admin:
        version = admin.info.server_version
        for login in logins:
            ensure_deploy_login(admin, login, args.app_database)
        ensure_role(admin, PLATFORM_LOGIN, "LOGIN CREATEROLE NOSUPERUSER NOCREATEDB NOREPLICATION")
        for group in (STATE_OWNER, STATE_WRITERS, STATE_READERS):
            ensure_role(admin, group, "NOLOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB")
        if version >= 160000:
            for role in (*logins, STATE_WRITERS, STATE_READERS):
                grant_admin_option(admin, role, PLATFORM_LOGIN)
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (STATE_DATABASE,)).fetchone():
            admin.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(STATE_DATABASE), sql.Identifier(STATE_OWNER)
                )
            )
            say(f"state database {STATE_DATABASE} created")
        admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(STATE_DATABASE)))
        admin.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}, {}").format(
                sql.Identifier(STATE_DATABASE), sql.Identifier(STATE_WRITERS), sql.Identifier(STATE_READERS)
            )
        )
    for database in args.app_database:
        with pg_connect(args, password, database) as admin:
            for login in logins:
                grant_schema_rights(admin, login)
    with pg_connect(args, password, STATE_DATABASE) as state:
        table = sql.Identifier(STATE_TABLE)
        state.execute(
            sql.SQL(STATE_TABLE_DDL).format(table=table, index=sql.Identifier(f"{STATE_TABLE}_key_prefix_idx"))
        )
        state.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(table, sql.Identifier(STATE_OWNER)))
        state.execute(sql.SQL("REVOKE ALL ON TABLE {} FROM PUBLIC").format(table))
        state.execute(
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE {} TO {}").format(
                table, sql.Identifier(STATE_WRITERS)
            )
        )
        state.execute(sql.SQL("GRANT SELECT ON TABLE {} TO {}").format(table, sql.Identifier(STATE_READERS)))


def set_password(args: argparse.Namespace, admin_password: str, login: str, password: str) -> None:
    with pg_connect(args, admin_password, args.pg_admin_database) as admin:
        admin.execute(sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(sql.Identifier(login), sql.Literal(password)))


# --- Vault --------------------------------------------------------------------


def vault_client(args: argparse.Namespace) -> hvac.Client:
    token = operator_token()
    if not token:
        raise SystemExit(
            "bootstrap: no Vault token: export VAULT_TOKEN (an operator token that may mount "
            "engines and write policies). Nothing was changed."
        )
    client = hvac.Client(url=args.vault_address, token=token, verify=vault_tls_verify())
    if not client.is_authenticated():
        raise SystemExit(
            f"bootstrap: Vault at {args.vault_address} refused the token in VAULT_TOKEN. Nothing was changed."
        )
    return client


def ensure_mount(client: hvac.Client, path: str, kind: str, description: str) -> None:
    if f"{path}/" not in client.sys.list_mounted_secrets_engines()["data"]:
        client.sys.enable_secrets_engine(kind, path=path, description=description)
        say(f"Vault {kind} engine mounted at {path}/")


def platform_connection(client: hvac.Client) -> dict | None:
    """The platform connection's settings as Vault holds them, or None if there is none."""
    try:
        return client.secrets.database.read_connection(PLATFORM_CONNECTION, mount_point=PLATFORM_MOUNT)["data"]
    except hvac.exceptions.InvalidPath:
        return None


def write_platform_connection(
    client: hvac.Client, name: str, url: str, password: str, allowed_roles: list[str], tls_ca: str | None = None
) -> None:
    """A connection of the platform engine, as `pgcreds_vault_platform` with the password
    just set for it, which Vault then rotates: from here on only Vault knows it."""
    client.secrets.database.configure(
        name,
        "postgresql-database-plugin",
        mount_point=PLATFORM_MOUNT,
        connection_url=url,
        username=PLATFORM_LOGIN,
        password=password,
        password_authentication="scram-sha-256",
        allowed_roles=allowed_roles,
        verify_connection=True,
        **({"tls_ca": tls_ca} if tls_ca is not None else {}),
    )
    client.secrets.database.rotate_root_credentials(name, mount_point=PLATFORM_MOUNT)


def bootstrap_vault_database(args: argparse.Namespace, client: hvac.Client, admin_password: str) -> None:
    ensure_mount(client, PLATFORM_MOUNT, "database", "pg-dynamic-creds: the deployer's own PostgreSQL logins")
    ca = f"&sslrootcert={args.pg_sslrootcert}" if args.pg_sslrootcert and args.pg_sslmode != "disable" else ""
    wanted_url = (
        f"postgresql://{{{{username}}}}:{{{{password}}}}@{args.pg_host}:{args.pg_port}/"
        f"{args.pg_admin_database}?sslmode={args.pg_sslmode}{ca}"
    )
    current = platform_connection(client)
    current_url = str(current["connection_details"].get("connection_url") or "") if current is not None else None
    allowed_roles = PLATFORM_ROLES + [deployer_role(application) for application in applications_of(args)]
    # A Vault has one platform connection: a bootstrap for another server points it there.
    repointed = current_url is not None and current_url != wanted_url
    if current_url is None or repointed or args.reset_platform_login:
        # Known here only until Vault's rotate-root below replaces it.
        platform_password = secrets.token_urlsafe(30)
        set_password(args, admin_password, PLATFORM_LOGIN, platform_password)
        write_platform_connection(client, PLATFORM_CONNECTION, wanted_url, platform_password, allowed_roles)
        say(
            f"Vault connection {PLATFORM_MOUNT}/config/{PLATFORM_CONNECTION} made (as {PLATFORM_LOGIN}) for "
            f"{args.pg_host}:{args.pg_port}, its password rotated"
        )
    else:  # a connection of an earlier bootstrap: the roles it may serve now, its own kept
        client.write(
            f"{PLATFORM_MOUNT}/config/{PLATFORM_CONNECTION}",
            allowed_roles=sorted({*((current or {}).get("allowed_roles") or []), *allowed_roles}),
        )
    for application in ("", *applications_of(args)):
        client.write(
            f"{PLATFORM_MOUNT}/static-roles/{deployer_role(application)}",
            db_name=PLATFORM_CONNECTION,
            username=deploy_login(application),
            rotation_period=args.deployer_rotation_seconds,
        )
        if repointed:
            # The login's password on this server is one Vault never set: set it now.
            client.write(f"{PLATFORM_MOUNT}/rotate-role/{deployer_role(application)}")
    for role, group in ((STATE_WRITE_ROLE, STATE_WRITERS), (STATE_READ_ROLE, STATE_READERS)):
        client.secrets.database.create_role(
            role,
            db_name=PLATFORM_CONNECTION,
            mount_point=PLATFORM_MOUNT,
            creation_statements=[STATE_USER_CREATION.format(group=f'"{group}"')],
            revocation_statements=[STATE_USER_REVOCATION],
            default_ttl=STATE_LOGIN_TTL,
            max_ttl=STATE_LOGIN_MAX_TTL,
        )
    client.secrets.database.create_role(
        PREVIEW_ROLE,
        db_name=PLATFORM_CONNECTION,
        mount_point=PLATFORM_MOUNT,
        creation_statements=list(PREVIEW_USER_CREATION),
        revocation_statements=[STATE_USER_REVOCATION],
        default_ttl=PREVIEW_LOGIN_TTL,
        max_ttl=PREVIEW_LOGIN_MAX_TTL,
    )


@dataclass(frozen=True)
class StackSpec:
    """`--stack NAME[:MOUNT[:APPLICATION[:PLATFORM]]]`: a stack, its
    pgcreds:vaultMountPath (default `database`) and, for an application stack, its
    pgcreds:application and its pgcreds:platformStack."""

    stack: str
    mount: str = "database"
    application: str = ""
    platform: str = ""

    @classmethod
    def parse(cls, value: str) -> StackSpec:
        stack, mount, application, platform, *extra = value.split(":") + ["", "", ""]
        if any(extra):
            raise ValueError(value)
        return cls(stack, mount or "database", application, platform)


def policy_text(name: str, spec: StackSpec) -> str:
    """A policy file of vault-policies/ for one stack: its transit key, its
    pgcreds:vaultMountPath where the file says `database` (the default), an
    application stack's application name where it says APPLICATION, and its deploy
    login's static role where it says DEPLOYER_ROLE."""
    text = (REPO / "vault-policies" / name).read_text()
    text = text.replace("pgcreds-STACK", transit_key(spec.stack)).replace(
        "DEPLOYER_ROLE", deployer_role(spec.application)
    )
    text = text.replace("STACKNAME", spec.stack)
    text = text.replace("APPLICATION", spec.application) if spec.application else text
    return text.replace("database", spec.mount) if spec.mount != "database" else text


class BadArgument(SystemExit):
    def __init__(self, argument: str, value: str, why: str):
        super().__init__(f"bootstrap: {argument} {value!r}: {why}. Nothing was changed.")


REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
GIT_REF = re.compile(r"refs/(?:heads|tags)/[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*")
SIMPLE = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def check_arguments(args: argparse.Namespace) -> None:
    """Every name that goes into a policy path, a jwt role or a bound claim, matched
    whole against its pattern before anything is read or changed: a wildcard or a
    `/` would give one stack's deploy token every mount, key or application."""

    def text(value: str) -> str:
        return value.encode("unicode_escape").decode()

    for value in args.stack:
        try:
            spec = StackSpec.parse(value)
        except ValueError:
            raise BadArgument("--stack", text(value), "must be NAME[:MOUNT[:APPLICATION[:PLATFORM]]]") from None
        for what, name in (("stack name", spec.stack), ("platform stack", spec.platform)):
            if (name or what == "stack name") and not STACK_NAME.fullmatch(name):
                raise BadArgument(
                    "--stack",
                    text(value),
                    f"the {what} {text(name)!r} must be lower-case letters, "
                    "digits and -, starting with a letter (at most 41)",
                )
        if not MOUNT_NAME.fullmatch(spec.mount):
            raise BadArgument(
                "--stack",
                text(value),
                f"the mount {text(spec.mount)!r} must be lower-case letters, "
                "digits, - and _, starting with a letter (no /: one path segment)",
            )
        if spec.mount in RESERVED_MOUNTS:
            raise BadArgument(
                "--stack",
                text(value),
                f"the mount {spec.mount!r} is Vault's or the deploy path's "
                "own; a stack's deployer may never mount or unmount it: choose another",
            )
        if spec.application and not APPLICATION_NAME.fullmatch(spec.application):
            raise BadArgument(
                "--stack",
                text(value),
                f"the application {text(spec.application)!r} must be "
                "lower-case letters and digits, starting with a letter (at most 20; no - or _)",
            )
        if spec.platform and not spec.application:
            raise BadArgument("--stack", text(value), "a platform stack is named for an application stack only")
    for option, value in (("--aiven-platform-stack", args.aiven_platform_stack), ("--aiven-stack", args.aiven_stack)):
        if value and not STACK_NAME.fullmatch(value):
            raise BadArgument(option, text(value), "must be a stack name")
    if not REPOSITORY.fullmatch(args.repository):
        raise BadArgument("--repository", text(args.repository), "must be the GitHub repository as owner/name")
    if not GIT_REF.fullmatch(args.deploy_ref) or ".." in args.deploy_ref:
        raise BadArgument(
            "--deploy-ref", text(args.deploy_ref), "must be one branch or tag, such as refs/heads/main (no wildcard)"
        )
    if not SIMPLE.fullmatch(args.jwt_audience):
        raise BadArgument("--jwt-audience", text(args.jwt_audience), "must be letters, digits, ., _, : or -")
    for database in args.app_database:
        if not IDENTIFIER.fullmatch(database):
            raise BadArgument(
                "--app-database", text(database), "must be a plain identifier (lower-case letters, digits, _)"
            )


def platform_decrypt(spec: StackSpec) -> str:
    """An application stack reads its platform stack's outputs (a StackReference),
    which the CLI decrypts with the platform's key: decrypt on that key alone."""
    if not spec.platform:
        return ""
    return (
        "\n# The platform stack's outputs (StackReference), decrypted with its key; never encrypted.\n"
        f'path "transit/decrypt/{transit_key(spec.platform)}" {{\n  capabilities = ["update"]\n}}\n'
    )


def deploy_policy_text(spec: StackSpec) -> str:
    """What a stack's deployer may do: all of the program's objects, or (an
    application stack) its application's alone; and its deploy session, which for
    a stack that may make an Aiven service reads the Aiven API's token."""
    if spec.application:
        program = policy_text("application.hcl", spec)
    else:
        program = policy_text("deployer.hcl", spec) + policy_text("aiven.hcl", spec)
    return program + policy_text("deploy-session.hcl", spec) + platform_decrypt(spec)


def preview_policy_text(spec: StackSpec) -> str:
    """What a stack's preview may do: read, and decrypt its own key (and its platform's)."""
    return policy_text("preview.hcl", spec) + platform_decrypt(spec)


def write_fleet_roles(
    args: argparse.Namespace, client: hvac.Client, applications: list[StackSpec], common: dict
) -> None:
    """The jwt roles of the deploy workflow's `applications` job (ci/fleet.sh), which
    brings many application stacks up in one run: `pgcreds-deploy-applications` (and
    `pgcreds-preview-applications`) holds the deploy (preview) policy of every
    application stack, those of earlier bootstraps kept while their policy exists.
    Its token can do what each application's own can, together, and no more: never
    a platform's or a single stack's."""
    existing = set(client.sys.list_acl_policies()["data"]["keys"])
    for kind, bound in (("deploy", {"ref": args.deploy_ref}), ("preview", {})):
        role = f"auth/{JWT_MOUNT}/role/{FLEET_ROLE}-{kind}"
        try:
            earlier = set((client.read(role) or {}).get("data", {}).get("token_policies") or [])
        except hvac.exceptions.InvalidPath:
            earlier = set()
        policies = sorted({p for p in earlier if p in existing} | {f"pgcreds-{kind}-{a.stack}" for a in applications})
        client.write(role, token_policies=policies, bound_claims={"repository": args.repository, **bound}, **common)
    say(
        f"jwt roles {FLEET_ROLE}-deploy and {FLEET_ROLE}-preview: the "
        f"application stacks {', '.join(a.stack for a in applications)} (and those of earlier bootstraps)"
    )


def bootstrap_vault_identities(args: argparse.Namespace, client: hvac.Client) -> None:
    ensure_mount(client, TRANSIT_MOUNT, "transit", "pg-dynamic-creds: one key per stack encrypts its secrets")
    auth_methods = client.sys.list_auth_methods()["data"]
    if f"{JWT_MOUNT}/" not in auth_methods:
        client.sys.enable_auth_method("jwt", path=JWT_MOUNT, description="CI's OIDC tokens (GitHub Actions)")
        say(f"Vault jwt auth method enabled at auth/{JWT_MOUNT}")
    if args.jwt_pubkey:
        client.write(
            f"auth/{JWT_MOUNT}/config",
            bound_issuer=args.jwt_issuer,
            jwt_validation_pubkeys=[Path(args.jwt_pubkey).read_text()],
        )
    else:
        client.write(f"auth/{JWT_MOUNT}/config", bound_issuer=args.jwt_issuer, oidc_discovery_url=args.jwt_issuer)
    specs = [StackSpec.parse(value) for value in args.stack]
    for spec in specs:
        key = transit_key(spec.stack)
        if not keys.key_exists(client, spec.stack):
            # (a stack whose state exists was refused before anything changed: check_keys)
            client.secrets.transit.create_key(
                key, mount_point=TRANSIT_MOUNT, exportable=True, allow_plaintext_backup=True
            )
            say(f"transit key {key} created")
        if args.key_backup_dir:
            say(f"transit key {key} backed up to {keys.back_up(client, spec.stack, Path(args.key_backup_dir))}")
        deploy_policy, preview_policy = f"pgcreds-deploy-{spec.stack}", f"pgcreds-preview-{spec.stack}"
        client.sys.create_or_update_acl_policy(deploy_policy, deploy_policy_text(spec))
        client.sys.create_or_update_acl_policy(preview_policy, preview_policy_text(spec))
        common = dict(
            role_type="jwt",
            user_claim="sub",
            bound_audiences=[args.jwt_audience],
            token_ttl=CI_TOKEN_TTL,
            token_max_ttl=CI_TOKEN_TTL,
            token_no_default_policy=False,
        )
        client.write(
            f"auth/{JWT_MOUNT}/role/{preview_policy}",
            token_policies=[preview_policy],
            bound_claims={"repository": args.repository},
            **common,
        )
        client.write(
            f"auth/{JWT_MOUNT}/role/{deploy_policy}",
            token_policies=[deploy_policy],
            bound_claims={"repository": args.repository, "ref": args.deploy_ref},
            **common,
        )
    applications = [spec for spec in specs if spec.application]
    if applications:
        write_fleet_roles(args, client, applications, common)
    say(
        f"stacks {', '.join(spec.stack for spec in specs)}: transit keys, policies and jwt roles "
        f"pgcreds-deploy-<stack> (repository {args.repository}, ref {args.deploy_ref}) and pgcreds-preview-<stack> "
        "are in place"
    )


def read_aiven_token(args: argparse.Namespace) -> str:
    """The Aiven API token from --aiven-token-file, checked with Aiven before anything
    changes ("" without the option)."""
    if not args.aiven_token_file:
        return ""
    try:
        token = Path(args.aiven_token_file).read_text().strip()
    except OSError as error:
        raise BadArgument("--aiven-token-file", args.aiven_token_file, f"cannot be read ({error.strerror})") from None
    if not token:
        raise BadArgument("--aiven-token-file", args.aiven_token_file, "is empty")
    try:
        aiven_api.check_token(args.aiven_api_url, token)
    except aiven_api.AivenApiError as error:
        raise SystemExit(f"bootstrap: --aiven-token-file: {error}. Nothing was changed.") from None
    return token


def bootstrap_aiven_token(args: argparse.Namespace, client: hvac.Client, token: str) -> None:
    """The long-lived token goes into Vault, and nowhere else: the deploy session of
    each run mints a short-lived one from it (`deployer.session --aiven`)."""
    mounts = client.sys.list_mounted_secrets_engines()["data"]
    if f"{AIVEN_MOUNT}/" not in mounts:
        client.sys.enable_secrets_engine(
            "kv",
            path=AIVEN_MOUNT,
            options={"version": "2"},
            description="pg-dynamic-creds: the Aiven API's long-lived token (deploy sessions mint from it)",
        )
        say(f"Vault kv engine mounted at {AIVEN_MOUNT}/")
    client.secrets.kv.v2.create_or_update_secret(
        path=AIVEN_SECRET, secret={"token": token, "api_url": args.aiven_api_url}, mount_point=AIVEN_MOUNT
    )
    say(f"the Aiven API token is in Vault at {AIVEN_MOUNT}/{AIVEN_SECRET} ({args.aiven_api_url}); delete its file")


def check_keys(args: argparse.Namespace, client: hvac.Client, password: str) -> None:
    """Before anything changes: a stack whose state the state database holds, but
    whose transit key is gone, is refused. A new key under the old name would not
    decrypt its secrets, and would hide why (`cipher: message authentication failed`)."""
    missing = [spec.stack for spec in map(StackSpec.parse, args.stack) if not keys.key_exists(client, spec.stack)]
    if not missing:
        return
    with pg_connect(args, password, args.pg_admin_database) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (STATE_DATABASE,)).fetchone():
            return
    with pg_connect(args, password, STATE_DATABASE) as state:
        for stack in missing:
            # (the stack file, plain or compressed: <stack>.json, .json.gz or .json.zst)
            rows = state.execute(
                sql.SQL("SELECT key, data->>'data' FROM {} WHERE key LIKE %s AND key NOT LIKE '%%.bak'").format(
                    sql.Identifier(STATE_TABLE)
                ),
                (f"%.pulumi/stacks/%/{stack}.json%",),
            ).fetchall()
            # (the state names its secrets provider: hashivault://<the key>)
            found = next((row for row in rows if secrets_provider(stack).encode() in state_blob(row[1])), None)
            if found:
                raise SystemExit(
                    f"bootstrap: the transit key {transit_key(stack)} is gone, but the state database holds the "
                    f"stack {stack!r} ({found[0]}), whose secrets it encrypted: a new key under the old name would "
                    "not decrypt them. Restore the key from its backup: python -m deployer.keys restore --stack "
                    f"{stack} --backup-dir <the bootstrap's --key-backup-dir> (docs/operations.md, \"When something is "
                    'stuck"). Nothing was changed.'
                )


def read_admin_password(from_stdin: bool) -> str:
    password = os.environ.get(PASSWORD_ENV, "")
    if not password and (from_stdin or not sys.stdin.isatty()):
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        raise SystemExit(
            f"bootstrap: the PostgreSQL admin password is needed once: pipe it on stdin or set "
            f"{PASSWORD_ENV}. Nothing was changed."
        )
    return password


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-admin-user", default="postgres", help="a superuser, or a CREATEROLE CREATEDB admin")
    parser.add_argument("--pg-admin-database", default="postgres", help="a database the admin connects to")
    parser.add_argument("--pg-sslmode", default="verify-full")
    parser.add_argument("--pg-sslrootcert", default="", help="CA file (also read by Vault's server)")
    parser.add_argument(
        "--app-database",
        action="append",
        default=[],
        help="a database the program creates tables in (pgcreds:postgresDatabase); repeatable",
    )
    parser.add_argument("--vault-address", default=os.environ.get("VAULT_ADDR", ""))
    parser.add_argument(
        "--stack",
        action="append",
        default=[],
        help="NAME[:MOUNT[:APPLICATION]]: a stack, its pgcreds:vaultMountPath if not `database`, and "
        "an application stack's pgcreds:application (its deploy policy then covers that "
        "application alone); repeatable",
    )
    parser.add_argument("--repository", required=True, help="owner/name of the GitHub repository CI runs in")
    parser.add_argument("--deploy-ref", default="refs/heads/main", help="the only ref the deploy role accepts")
    parser.add_argument("--jwt-issuer", default=GITHUB_ISSUER)
    parser.add_argument("--jwt-audience", default="pgcreds-vault")
    parser.add_argument(
        "--jwt-pubkey",
        default="",
        help="a PEM public key to verify tokens with instead of the issuer's discovery URL (tests)",
    )
    parser.add_argument("--deployer-rotation-seconds", type=int, default=DEPLOYER_ROTATION_SECONDS)
    parser.add_argument(
        "--reset-platform-login",
        action="store_true",
        help="give Vault's platform login a new password (after a restore of PostgreSQL)",
    )
    parser.add_argument(
        "--key-backup-dir",
        default=os.environ.get("PGCREDS_KEY_BACKUP_DIR", ""),
        help="write each stack's transit key backup here (mode 0600; as secret as the keys)",
    )
    parser.add_argument(
        "--aiven-token-file",
        default="",
        help="a file holding the Aiven API token: it is stored in Vault (pgcreds-aiven/api) for the "
        "deploy sessions to mint each run's short-lived token from",
    )
    parser.add_argument(
        "--aiven-api-url",
        default=os.environ.get("AIVEN_WEB_URL") or aiven_api.DEFAULT_API_URL,
        help="the Aiven API (default: AIVEN_WEB_URL, then https://api.aiven.io)",
    )
    parser.add_argument(
        "--aiven-platform-stack",
        default="",
        help="bootstrap the Aiven service this platform stack made, from its outputs (no admin password on "
        "stdin): Vault's login and the --stack application stacks' deploy logins there; then Aiven resets "
        "the service admin's password",
    )
    parser.add_argument(
        "--aiven-stack",
        default="",
        help="hand the Aiven service a single (first-day) stack made over to a deploy login of its own there "
        "(pgcreds_deployer, static role deployer-stack-<stack>), set its postgresAdminUser, then have Aiven "
        "reset the admin's password",
    )
    parser.add_argument("--project-dir", default=str(REPO), help="the program's folder (its stacks' settings)")
    parser.add_argument("--password-stdin", action="store_true")
    args = parser.parse_args(argv)
    if not args.stack and not args.aiven_platform_stack and not args.aiven_stack:
        parser.error("the following arguments are required: --stack")
    return args


def main_aiven_service(args: argparse.Namespace) -> int:
    """--aiven-platform-stack: the service's logins, the application stacks' Vault
    identities, and the admin's password reset (deployer.aiven_service)."""
    from deployer.aiven_service import bootstrap_service

    for spec in map(StackSpec.parse, args.stack):
        if spec.platform != args.aiven_platform_stack:
            raise BadArgument(
                "--stack",
                f"{spec.stack}:{spec.mount}:{spec.application}:{spec.platform}",
                f"with --aiven-platform-stack, every --stack is an application stack of that platform "
                f"(NAME:MOUNT:APPLICATION:{args.aiven_platform_stack})",
            )
    client = vault_client(args)
    aiven_token = read_aiven_token(args)
    if aiven_token:
        bootstrap_aiven_token(args, client, aiven_token)
    service = bootstrap_service(args, client, applications_of(args))
    if args.stack:
        bootstrap_vault_identities(args, client)
    say(f"done: the Aiven service {service.name} needs its admin's password no more")
    return 0


def main_aiven_stack(args: argparse.Namespace) -> int:
    """--aiven-stack: a first-day single stack's service handed over (deployer.aiven_service),
    and the stack's policies written again (they name its deploy login's static role)."""
    from deployer.aiven_service import hand_over_stack

    client = vault_client(args)
    aiven_token = read_aiven_token(args)
    if aiven_token:
        bootstrap_aiven_token(args, client, aiven_token)
    service = hand_over_stack(args, client)
    args.stack = args.stack or [args.aiven_stack]
    bootstrap_vault_identities(args, client)
    say(f"done: the stack {args.aiven_stack} deploys on {service.name} without its admin's password")
    return 0


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    check_arguments(args)  # before anything is read or changed
    if args.aiven_platform_stack:
        return main_aiven_service(args)
    if args.aiven_stack:
        return main_aiven_stack(args)
    admin_password = read_admin_password(args.password_stdin)
    client = vault_client(args)  # checked before anything is changed
    aiven_token = read_aiven_token(args)
    check_keys(args, client, admin_password)
    bootstrap_postgres(args, admin_password)
    bootstrap_vault_database(args, client, admin_password)
    bootstrap_vault_identities(args, client)
    if aiven_token:
        bootstrap_aiven_token(args, client, aiven_token)
    say("done: the admin password is no longer needed to deploy")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
