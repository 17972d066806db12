"""Wiring only: settings -> components -> exports."""

import gc

import pulumi
from pulumi import Output

from components.access_roles import AccessRoles, AccessRolesArgs
from components.aiven_postgres import AivenPostgres, AivenPostgresArgs
from components.app_identities import AppIdentities, AppIdentitiesArgs
from components.app_schema import AppSchema, AppSchemaArgs
from components.existing_postgres import ExistingPostgres, ExistingPostgresArgs
from components.platform_reference import PlatformReference, PlatformReferenceArgs
from components.vault_database_secrets import VaultDatabaseSecrets, VaultDatabaseSecretsArgs, new_vault_provider
from preflight import check_logins, check_postgres_login
from settings import GRANT_LAYOUT, load_settings

settings = load_settings()
# A login that does not work stops everything here, before any change; the answer
# says which Vault server it is (HashiCorp Vault or OpenBao), where they differ.
vault_server = check_logins(settings)

# One explicit Vault provider (its token from the environment, never in state).
vault_provider = new_vault_provider("vault", settings.vault.address)

# PostgreSQL and Vault's mounts: made here (the whole graph, or the platform
# stack), or an application stack's platform stack's, read through a StackReference.
platform: PlatformReference | None = None
postgres: AivenPostgres | ExistingPostgres | None = None
if settings.layout.kind == "application" and isinstance(settings.postgres, ExistingPostgresArgs):
    # (an application stack's own login and TLS settings; the server is its platform's)
    platform = PlatformReference(
        "platform",
        PlatformReferenceArgs(
            stack=settings.layout.platform_stack or "",
            admin_user=settings.postgres.admin_user,
            sslmode=settings.postgres.sslmode,
            sslrootcert=settings.postgres.sslrootcert,
            mount_path=settings.vault.mount_path,
            approle_path=settings.vault.approle_path,
            check_login=check_postgres_login,
        ),
    )
    endpoint = platform.endpoint
elif isinstance(settings.postgres, AivenPostgresArgs):
    postgres = AivenPostgres("aiven-postgres", settings.postgres)
    endpoint = postgres.endpoint
else:
    postgres = ExistingPostgres("postgres", settings.postgres)
    endpoint = postgres.endpoint

schema = (
    AppSchema(
        "app-schema",
        AppSchemaArgs(
            endpoint=endpoint,
            tables=settings.tables,
            owner_role=settings.owner_role,
            sample_data=settings.sample_data,
            keep_tables_on_destroy=settings.keep_tables_on_destroy,
            schema=settings.schema,
        ),
    )
    if settings.layout.kind != "platform"
    else None
)

access = (
    AccessRoles(
        "access-roles",
        AccessRolesArgs(
            endpoint=endpoint,
            roles=settings.roles,
            tables=schema.tables,
            owner_role=schema.owner_role,
            sequences=schema.sequences,
            vault_connections=settings.vault.connections,
            per_table_grants_in_state=settings.per_table_grants_in_state,
            schema=schema.schema,
            schema_made=schema.made,
        ),
    )
    if schema
    else None
)

vault_secrets = VaultDatabaseSecrets(
    "vault-database-secrets",
    VaultDatabaseSecretsArgs(
        endpoint=endpoint,
        vault_provider=vault_provider,
        vault_address=settings.vault.address,
        mount_path=settings.vault.mount_path,
        connections=settings.vault.connections,
        logins=access.vault_logins if access else {},
        rotate_root=settings.vault.rotate_root,
        owner_role=settings.owner_role,
        schema=settings.schema,
        depends_on=access.grants if access else (),
        platform_mount=platform.mount_path if platform else None,
        platform_vault_id=platform.vault_id if platform else None,
        ca_in_connection=vault_server.verifies_tls_ca,
    ),
)

# An application's identity only once its credentials can be issued (and so
# never for a role whose name a check refused).
apps = AppIdentities(
    "app-identities",
    AppIdentitiesArgs(
        vault_provider=vault_provider,
        auth_path=settings.vault.approle_path,
        mount_path=vault_secrets.mount_path,
        roles=settings.roles,
        platform_auth_path=platform.approle_path if platform else None,
        platform_policy=platform.applications_policy if platform else None,
        applications_policy=settings.layout.kind == "platform",
        vault_address=settings.vault.address,
        vault_id=vault_secrets.vault_id,
    ),
    pulumi.ResourceOptions(depends_on=[vault_secrets]),
)

if isinstance(postgres, AivenPostgres):
    postgres.guard_destroy(dependents=[r for r in (schema, access, vault_secrets, apps) if r])

pulumi.export("stackKind", settings.layout.kind)
pulumi.export(
    "postgres",
    {
        "host": endpoint.host,
        "port": endpoint.port,
        "database": endpoint.database,
        "sslmode": endpoint.sslmode,
        "sslrootcert": endpoint.sslrootcert,
        "sslrootcert_pem": endpoint.sslrootcert_pem,
        "vaultSslmode": endpoint.vault_sslmode,
        "vaultSslRootCert": endpoint.vault_sslrootcert,
        "adminUser": endpoint.admin_user,
    },
)
if isinstance(postgres, AivenPostgres):
    # What the one-time service bootstrap reads (deployer.aiven_service), as the operator:
    # the admin login, a secret here, whose password the bootstrap then has Aiven reset.
    pulumi.export(
        "aivenService",
        {
            "project": postgres.args.project,
            "serviceName": postgres.args.service_name,
            "adminUser": postgres.service.service_username,
            "adminPassword": Output.secret(postgres.service.service_password),
            "deployLogin": endpoint.admin_user,
        },
    )
pulumi.export("vaultAddress", settings.vault.address)
pulumi.export("vaultMountPath", vault_secrets.mount_path)
if settings.layout.kind == "platform":
    # What its application stacks read (PlatformReference).
    pulumi.export("vaultAppRolePath", apps.auth_path)
    pulumi.export("vaultId", vault_secrets.vault_id)
    pulumi.export("vaultApplicationsPolicy", apps.applications_policy)
elif access is not None:  # (every stack but a platform has its roles)
    pulumi.export("credentialPaths", vault_secrets.credential_paths)
    pulumi.export("grantLayout", GRANT_LAYOUT)
    pulumi.export("groupRoles", {role.name: role.group_role for role in settings.roles})
    pulumi.export("appRoles", apps.login_paths)
    # What each role may do, for the smoke check, `make access` and the pull request's report.
    pulumi.export(
        "roleAccess",
        {
            role.name: {
                "access": role.access,
                "tables": list(role.tables),
                # (and the credentials' life: a pull request's access report compares them, review/access.py)
                "defaultTtl": role.default_ttl_seconds,
                "maxTtl": role.max_ttl_seconds,
                "secretIdUses": role.secret_id_uses,
                "locked": role.locked,
                **({"owner": settings.owner_role} if role.acts_as_owner else {}),
            }
            for role in settings.roles
        },
    )
    # What the settings grant: `make drift` compares the catalog with it.
    pulumi.export("declaredPrivileges", access.declared_privileges)
    pulumi.export("lockedRoles", sorted(role.name for role in settings.roles if role.locked))
    # The logins Vault uses, by connection; with rotate-root only Vault knows their passwords.
    pulumi.export("vaultLogins", {c.name: access.vault_logins[c.login].username for c in settings.vault.connections})

# All that is loaded and built by now lives until the process exits: frozen, it is
# left out of the garbage collections, above all the interpreter's last one at
# exit (measured: exit 0.28 s -> 0.04 s).
gc.freeze()
