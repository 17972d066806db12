"""ApplicationDatabase: one application's whole graph on a server and a Vault mount
given directly (its schema and tables, roles and grants, Vault's connection and
roles, and an AppRole per role), as one component that the Pulumi package in
`package/` offers to programs in any language.

No `from __future__ import annotations` here: the SDK's component analyzer reads
these annotations as types to write the package's schema.
"""

import dataclasses
import os
from enum import Enum, StrEnum
from typing import NotRequired, TypedDict, cast

import pulumi
from pulumi import Output, ResourceOptions
from pulumi.provider.experimental.util import camel_case

from components.access_roles import AccessRoles, AccessRolesArgs
from components.app_identities import AppIdentities, AppIdentitiesArgs
from components.app_schema import AppSchema, AppSchemaArgs
from components.existing_postgres import ExistingPostgres, ExistingPostgresArgs
from components.vault_database_secrets import VaultDatabaseSecrets, VaultDatabaseSecretsArgs, new_vault_provider


class Access(StrEnum):
    """What a role's credentials may do on its tables."""

    # (named as other languages' SDKs show them: Access.Read, AccessRead)
    Read = "read"
    """SELECT."""
    ReadWrite = "readwrite"
    """SELECT, INSERT, UPDATE, DELETE, and USAGE on the tables' sequences."""
    Migrate = "migrate"
    """Schema migrations: its users' sessions run as the table owner role (names no tables)."""


class ApplicationRole(TypedDict):
    """One kind of credential the application's code asks Vault for."""

    name: str
    """Vault role name, starting with `<application>-`; credentials are read at `<mount>/creds/<name>`."""
    access: Access
    """What its credentials may do on `tables`."""
    tables: NotRequired[list[str]]
    """Tables of the application's schema its credentials may use (none for `migrate`); `tables.py`'s are made."""
    default_ttl: NotRequired[str]
    """Life of a credential unless renewed, such as 1h or 30m (default 1h, at most 24h)."""
    max_ttl: NotRequired[str]
    """Life a credential never outlives (default 24h, at most 24h)."""
    secret_id_ttl: NotRequired[str]
    """How long an AppRole secret-id for this role may be used to log in (default 1h)."""
    secret_id_uses: NotRequired[int]
    """Logins one secret-id allows (default 1, at most 100)."""
    locked: NotRequired[bool]
    """Break-glass: Vault keeps the role but issues no credential for it."""
    username_template: NotRequired[str]
    """Vault username_template for its users, ending with `| truncate 63`; Vault's default when unset."""


class ApplicationDatabaseArgs(TypedDict):
    """Where the application's database and Vault mount are, and its roles. Logins are
    never inputs: PostgreSQL's comes from the deploy session (PGUSER, PGPASSFILE) and
    Vault's from VAULT_TOKEN, in the environment the `pulumi` command runs in."""

    application: str
    """The application's name (a-z and 0-9, at most 20): its schema, its Vault connection, its roles' first word."""
    vault_mount_path: str
    """Path of the database secrets engine this component mounts for the application."""
    roles: list[ApplicationRole]
    """The kinds of credentials Vault issues (at least one)."""
    vault_address: NotRequired[str]
    """Vault's API address, such as https://vault.example.com:8200 (default VAULT_ADDR)."""
    postgres_host: NotRequired[str]
    """PostgreSQL's host as Pulumi and Vault reach it (default PGHOST, then 127.0.0.1)."""
    postgres_port: NotRequired[int]
    """PostgreSQL's port (default PGPORT, then 5432)."""
    postgres_database: NotRequired[str]
    """Database the schema is made in (default postgres)."""
    postgres_admin_user: NotRequired[str]
    """The login that makes roles and tables (CREATEROLE, CREATE); the deploy session's PGUSER, the default."""
    postgres_ssl_mode: NotRequired[str]
    """libpq sslmode of Pulumi's and Vault's connections (default prefer; disable only on a dev stack)."""
    postgres_ssl_root_cert: NotRequired[str]
    """CA file that verify-ca and verify-full check the server against."""
    vault_ssl_root_cert: NotRequired[str]
    """The CA file's path on Vault's host, where it differs (OpenBao reads it only from a file)."""
    vault_app_role_path: NotRequired[str]
    """Path of the AppRole auth method the application logs in with (default `<mount>-approle`)."""
    vault_rotate_root: NotRequired[bool]
    """Vault rotates its login's password at once, so that only Vault knows it (default true)."""
    table_owner_role: NotRequired[str]
    """NOLOGIN role that owns the schema and tables (default `<application>_owner`)."""
    vault_admin_role: NotRequired[str]
    """Prefix of the login Vault makes users with (default `<application>_vault`)."""
    keep_tables_on_destroy: NotRequired[bool]
    """Leave the tables and their rows in place on destroy (default true)."""


class AppRoleLogin(TypedDict):
    """Where an application logs in to read its role's credentials (never a secret-id itself)."""

    role_id_path: str
    """Vault path of the role-id."""
    secret_id_path: str
    """Vault path a deployer writes to issue a secret-id."""
    login_path: str
    """Vault path the application logs in at with both."""
    policy: str
    """Vault policy its token gets: read on its role's credentials only."""


class RoleAccess(TypedDict):
    """What a role's credentials may do, as declared."""

    access: str
    """read, readwrite or migrate."""
    tables: list[str]
    """Its tables."""
    owner: NotRequired[str]
    """The table owner role a migrate role's sessions act as."""


class PostgresServer(TypedDict):
    """Where the application's database is, as Pulumi and Vault reach it (no password)."""

    host: str
    port: int
    database: str
    sslmode: str
    sslrootcert: NotRequired[str]
    """CA file the connections verify the server with."""
    admin_user: str
    """The login that made the schema and roles."""


class ApplicationDatabase(pulumi.ComponentResource):
    """An application's PostgreSQL schema, tables and least-privilege roles, and the Vault database secrets
    engine that issues short-lived credentials for them, with an AppRole per role."""

    postgres: Output[PostgresServer]
    """The server and database."""
    schema: Output[str]
    """The application's schema."""
    vault_address: Output[str]
    """Vault's API address."""
    mount_path: Output[str]
    """Vault's database secrets engine."""
    credential_paths: Output[dict[str, str]]
    """Per role, the Vault path its credentials are read at."""
    app_role_logins: Output[dict[str, AppRoleLogin]]
    """Per role, where the application logs in to Vault."""
    group_roles: Output[dict[str, str]]
    """Per role, the NOLOGIN PostgreSQL role that holds its grants (each user is made a member)."""
    role_access: Output[dict[str, RoleAccess]]
    """Per role, its access and tables (what the smoke check and an access review read)."""

    def __init__(self, name: str, args: ApplicationDatabaseArgs, opts: ResourceOptions | None = None):
        super().__init__("pgcreds:index:ApplicationDatabase", name, None, opts)
        # (imported here: both read the program's modules, which import the components)
        from preflight import check_logins
        from settings import parse_application

        settings = parse_application(_as_settings(dict(args)), os.environ, pulumi.get_stack(), component=name)
        vault_server = check_logins(settings)
        assert isinstance(settings.postgres, ExistingPostgresArgs)  # (never Aiven: no such input)
        admin_user = settings.postgres.admin_user
        vault_provider = new_vault_provider(f"{name}-vault", settings.vault.address, parent=self)
        in_self = ResourceOptions(parent=self)
        # (every message names the component's input, not a stack setting)
        setting_prefix = f"{name}."
        endpoint = dataclasses.replace(
            ExistingPostgres(f"{name}-postgres", settings.postgres, in_self).endpoint, setting_prefix=setting_prefix
        )
        schema = AppSchema(
            f"{name}-schema",
            AppSchemaArgs(
                endpoint=endpoint,
                tables=settings.tables,
                owner_role=settings.owner_role,
                sample_data=False,
                keep_tables_on_destroy=settings.keep_tables_on_destroy,
                schema=settings.schema,
            ),
            in_self,
        )
        access = AccessRoles(
            f"{name}-access",
            AccessRolesArgs(
                endpoint=endpoint,
                roles=settings.roles,
                tables=schema.tables,
                owner_role=schema.owner_role,
                sequences=schema.sequences,
                vault_connections=settings.vault.connections,
                schema=schema.schema,
                schema_made=schema.made,
            ),
            in_self,
        )
        secrets = VaultDatabaseSecrets(
            f"{name}-vault-secrets",
            VaultDatabaseSecretsArgs(
                endpoint=endpoint,
                vault_provider=vault_provider,
                vault_address=settings.vault.address,
                mount_path=settings.vault.mount_path,
                connections=settings.vault.connections,
                logins=access.vault_logins,
                rotate_root=settings.vault.rotate_root,
                owner_role=settings.owner_role,
                schema=settings.schema,
                depends_on=access.grants,
                ca_in_connection=vault_server.verifies_tls_ca,
            ),
            in_self,
        )
        identities = AppIdentities(
            f"{name}-identities",
            AppIdentitiesArgs(
                vault_provider=vault_provider,
                auth_path=settings.vault.approle_path,
                mount_path=secrets.mount_path,
                roles=settings.roles,
                vault_address=settings.vault.address,
                vault_id=secrets.vault_id,
                setting_prefix=setting_prefix,
            ),
            ResourceOptions(parent=self, depends_on=[secrets]),
        )
        self.postgres = Output.all(endpoint.host, endpoint.port, endpoint.database).apply(
            lambda where: PostgresServer(
                host=where[0],
                port=where[1],
                database=where[2],
                sslmode=endpoint.sslmode,
                admin_user=admin_user,
                **({"sslrootcert": endpoint.sslrootcert} if endpoint.sslrootcert else {}),  # type: ignore[typeddict-item]
            )
        )
        self.schema = Output.from_input(settings.schema)
        self.vault_address = Output.from_input(settings.vault.address)
        self.mount_path = secrets.mount_path
        self.credential_paths = Output.from_input(secrets.credential_paths)
        # Already under the schema's names: the SDK renames the keys of an output object,
        # not of the objects in an output map.
        self.app_role_logins = cast("Output[dict[str, AppRoleLogin]]", Output.all(**identities.login_paths))
        self.group_roles = Output.from_input({role.name: role.group_role for role in settings.roles})
        self.role_access = Output.from_input(
            {
                role.name: RoleAccess(
                    access=role.access,
                    tables=list(role.tables),
                    **({"owner": settings.owner_role} if role.acts_as_owner else {}),  # type: ignore[typeddict-item]
                )
                for role in settings.roles
            }
        )
        self.register_outputs(
            {
                "postgres": self.postgres,
                "schema": self.schema,
                "vaultAddress": self.vault_address,
                "roleAccess": self.role_access,
                "mountPath": self.mount_path,
                "credentialPaths": self.credential_paths,
                "appRoleLogins": self.app_role_logins,
                "groupRoles": self.group_roles,
            }
        )


def _as_settings(args: dict) -> dict:
    """The component's inputs under the names the settings check uses: the schema's
    (the SDK's own `camel_case`, which named them), as in Pulumi.yaml; an Access is its value."""

    def plain(value):
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, dict):
            return {camel_case(k): plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return plain(args)
