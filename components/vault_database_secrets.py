"""VaultDatabaseSecrets: a database secrets engine mount, its PostgreSQL
connections (each with its own login, whose password Vault rotates) and one
Vault role per application role, each with a lease revoker that empties the
role before it (or its connection) goes. Split layout: the platform stack makes
the mount alone; an application stack writes its connection and roles into it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import pulumi
import pulumi_vault as vault
from pulumi import Input, Output, ResourceOptions

from clients.tls import server_certificate_problem
from components.access_roles import VaultLogin
from components.app_role import AppRole
from components.pg_endpoint import PgEndpoint, this_stack_mark
from components.vault_connections import DEFAULT_USERNAME_TEMPLATE, VaultConnection
from providers.vault import FirstLoginPassword, VaultLeaseRevoker

# The provider's token: a child of VAULT_TOKEN, valid one hour.
VAULT_CHILD_TOKEN_TTL_SECONDS = 3600


def creation_statements(role: AppRole, owner_role: str, schema: str = "public") -> list[str]:
    """A login role that expires with its lease and inherits the group's grants:
    one statement however many tables the group covers. A migration role's user
    starts every session as the table owner role, so what it creates is the
    owner's (and stays when the user is dropped). In an application stack's own
    schema, every session starts with it as its search_path."""
    statements = [
        "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' "
        f"VALID UNTIL '{{{{expiration}}}}' IN ROLE \"{role.group_role}\";"
    ]
    if role.acts_as_owner:
        statements.append(f"ALTER ROLE \"{{{{name}}}}\" SET role TO '{owner_role}';")
    if schema != "public":
        statements.append(f'ALTER ROLE "{{{{name}}}}" SET search_path TO "{schema}";')
    return statements


# Vault's default revocation fails for a non-superuser admin, so every role has
# these. One dollar-quoted block (Vault runs it whole, not split on ';'): wait
# for any other revocation on this server to finish (Vault revokes a prefix's
# leases in parallel, and concurrent DROP OWNED fail with "tuple concurrently
# deleted", measured), take membership of the user (needed to end its sessions
# and reassign its objects), end its open sessions, hand anything it owns to
# Vault's login, drop it. A user that is already gone is not an error, so a
# lease can always be revoked.
REVOCATION_STATEMENTS = [
    """DO $$
BEGIN
  PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('pgcreds: revocation'));
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = '{{name}}') THEN
    EXECUTE format('GRANT %I TO CURRENT_USER', '{{name}}');
    PERFORM pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE usename = '{{name}}';
    EXECUTE format('REASSIGN OWNED BY %I TO CURRENT_USER', '{{name}}');
    EXECUTE format('DROP OWNED BY %I', '{{name}}');
    EXECUTE format('DROP ROLE %I', '{{name}}');
  END IF;
END
$$;"""
]


@dataclass(frozen=True)
class VaultDatabaseSecretsArgs:
    endpoint: PgEndpoint
    """The PostgreSQL server Vault connects to."""
    vault_provider: vault.Provider
    """The explicit provider every Vault resource uses (its token comes from VAULT_TOKEN)."""
    vault_address: str
    """Vault API address, for the lease revokers (dynamic resources cannot use the provider)."""
    mount_path: str
    """Mount path of the database secrets engine."""
    connections: tuple[VaultConnection, ...]
    """The connections (`<mount>/config/<name>`) and their roles, one Vault role
    each at `<mount>/roles/<name>`."""
    logins: Mapping[str, VaultLogin]
    """The PostgreSQL login of each connection, by name."""
    rotate_root: bool
    """Have Vault replace each login's password right after the connection is made."""
    owner_role: str
    """The table owner role, which a `migrate` role's users start their sessions as."""
    schema: str = "public"
    """The schema of the tables: another is every credential's search_path."""
    depends_on: Sequence[pulumi.Resource] = ()
    """Grants that must exist before credentials can be issued."""
    platform_mount: Input[str] | None = None
    """An application stack's: the platform stack's mount (equal to `mount_path`),
    which its connection and roles go into and which it never makes or removes."""
    platform_vault_id: Input[str] | None = None
    """With `platform_mount`: the platform Vault's identity, for the lease revokers."""
    ca_in_connection: bool = False
    """The Vault server verifies PostgreSQL with the connection's `tls_ca` (HashiCorp
    Vault does, OpenBao ignores it): the CA goes there instead of a file on its host."""


class MountPathTaken(pulumi.RunError):
    """The mount path holds another kind of secrets engine (reported without a traceback)."""


def vault_identity(mounts_json: str) -> str:
    """What tells one Vault from another whatever its address: the uuid of its
    identity mount (shared by a cluster's nodes, unlike the local cubbyhole)."""
    mounts = json.loads(mounts_json or "{}")
    return str((mounts.get("identity/") or mounts.get("sys/") or {}).get("uuid") or "")


def checked_mount_path(mounts_json: str, path: str, setting_prefix: str) -> str:
    """`path`, once Vault's mount table shows it free or holding a database
    engine; otherwise the preview stops here, before anything changes."""
    existing = json.loads(mounts_json or "{}").get(path + "/")
    if existing is not None and existing.get("type") != "database":
        raise MountPathTaken(
            f"Vault already has a {existing.get('type')!r} secrets engine at {path!r}: choose another "
            f"{setting_prefix}vaultMountPath (nothing was changed)"
        )
    return path


class ServerNotVerified(pulumi.RunError):
    """The server's certificate fails the check Vault's connection will make (no traceback)."""


def verified_url(
    url: str, host: str, port: int, ca_pem: str | None, verifies: bool, connections: str, ca_source: str
) -> str:
    """`url`, once the server's certificate passes the check Vault will make with it
    (verify-full against the CA): otherwise the run stops here, before Vault's
    connection is written, naming the connection and the CA. Vault's own refusal
    would come later and name neither (`x509: certificate is valid for …`)."""
    problem = server_certificate_problem(host, int(port), ca_pem) if verifies and ca_pem else ""
    if problem:
        raise ServerNotVerified(
            f"Vault's connection {connections} verifies the server (sslmode=verify-full) against {ca_source}, "
            f"and the certificate that {host}:{port} presents is refused: {problem}. Vault would refuse to connect: "
            "the host must be a name the certificate holds, and the CA the one that signed it. The connection "
            "was not written."
        )
    return url


def versions_of(login: str) -> Callable[[str], int]:
    """`password_version` of `login`, for the server an Output holds."""
    return lambda server: password_version(server, login)


def new_vault_provider(name: str, address: str, parent: pulumi.Resource | None = None) -> vault.Provider:
    """The one explicit Vault provider of a graph. Its token is VAULT_TOKEN from the
    environment, never an input (so never in state); it works with a child token of
    it, valid one hour."""
    return vault.Provider(
        name,
        address=address,
        max_lease_ttl_seconds=VAULT_CHILD_TOKEN_TTL_SECONDS,
        opts=ResourceOptions(parent=parent),
    )


def password_version(server: str, login: str) -> int:
    """The write-only password is sent again only when this number changes: when
    the login is new on a server (a move to another server re-creates it there
    with its first password). Any other update leaves Vault's rotated one alone."""
    return int(hashlib.sha256(f"{login}@{server}".encode()).hexdigest()[:7], 16)


class VaultDatabaseSecrets(pulumi.ComponentResource):
    mount_path: Output[str]
    vault_id: Output[str]
    """The Vault's identity (its identity mount's uuid), which the lease revokers pin."""
    credential_paths: dict[str, str]
    """`<mount>/creds/<role>` per application role."""

    def __init__(self, name: str, args: VaultDatabaseSecretsArgs, opts: ResourceOptions | None = None):
        super().__init__("pgcreds:vault:VaultDatabaseSecrets", name, None, opts)
        in_vault = ResourceOptions(parent=self, provider=args.vault_provider)
        # The provider renames a connection or role in place, and then writes the
        # connection without its password (measured: "password authentication
        # failed"). A new name is a new object: made first, the old one (and its
        # leases, by its revoker) removed after.
        renamed_is_new = ResourceOptions.merge(in_vault, ResourceOptions(replace_on_changes=["name"]))
        # Read Vault's mount table first: a path that holds another engine stops the
        # preview, and the mount waits for the check, so nothing changes before it.
        if args.platform_mount is not None:
            mount_path = Output.from_input(args.platform_mount)
            vault_id = cast("Output[str]", Output.from_input(args.platform_vault_id))
        else:
            mounts = vault.generic.get_secret_output(
                path="sys/mounts", opts=pulumi.InvokeOutputOptions(provider=args.vault_provider, parent=self)
            )
            vault_id = mounts.data_json.apply(vault_identity)
            # A new path is a new engine, made (and its connection and roles written)
            # before the old one is emptied and removed. The provider would rather
            # remount, after which it cannot delete the old roles ("no handler for route").
            mount_path = vault.Mount(
                f"{name}-mount",
                path=mounts.data_json.apply(
                    lambda table: checked_mount_path(table, args.mount_path, args.endpoint.setting_prefix)
                ),
                type="database",
                description=f"Short-lived PostgreSQL credentials ({this_stack_mark()})",
                opts=ResourceOptions.merge(in_vault, ResourceOptions(replace_on_changes=["path"])),
            ).path
        ca_pem = args.endpoint.vault_tls_ca()
        tls_ca = ca_pem if args.ca_in_connection else None
        endpoint = args.endpoint
        connection_url = Output.all(
            endpoint.vault_connection_url(ca_in_connection=tls_ca is not None),
            endpoint.host,
            endpoint.port,
            ca_pem,
            endpoint.vault_verifies(tls_ca is not None),
            Output.concat(mount_path, "/config/", "|".join(plan.name for plan in args.connections)),
            Output.from_input(endpoint.vault_sslrootcert).apply(
                lambda path: (
                    "the CA in the connection's tls_ca"
                    if tls_ca is not None
                    else f"the CA file {path or endpoint.sslrootcert} on Vault's host"
                )
            ),
        ).apply(lambda parts: verified_url(*parts))
        server = Output.format("{0}:{1}/{2}", args.endpoint.host, args.endpoint.port, args.endpoint.database)

        for plan in args.connections:
            login = args.logins[plan.login]
            suffix = "" if plan.username_template is None else f"-{plan.roles[0].name}"
            made_after = list(args.depends_on)
            if args.rotate_root:
                version = server.apply(versions_of(plan.login))
                # Write-only: never in state, sent on create and when `version` changes.
                password: dict[str, Any] = dict(password_wo=Output.secret(login.password), password_wo_version=version)
                # A connection made again (deleted behind Pulumi's back) needs the login's
                # first password back, since only the lost connection knew the rotated one.
                first_password = FirstLoginPassword(
                    f"{name}-first-password{suffix}",
                    connection=args.endpoint.admin_connection(),
                    login=login.username,
                    password=login.password,
                    server=server,
                    address=args.vault_address,
                    mount=mount_path,
                    connection_name=plan.name,
                    opts=ResourceOptions(parent=self, depends_on=made_after),
                )
                made_after = [first_password]
            else:
                password = dict(password=Output.secret(login.password))
            tls_ca_input: dict[str, Any] = {"tls_ca": tls_ca} if tls_ca is not None else {}
            connection = vault.database.SecretBackendConnection(
                f"{name}-connection{suffix}",
                backend=mount_path,
                name=plan.name,
                allowed_roles=plan.allowed_roles,
                verify_connection=True,
                postgresql=vault.database.SecretBackendConnectionPostgresqlArgs(
                    connection_url=connection_url,
                    username=login.username,
                    username_template=plan.username_template or DEFAULT_USERNAME_TEMPLATE,
                    # Vault sends PostgreSQL a SCRAM verifier, never the clear password.
                    password_authentication="scram-sha-256",
                    **password,
                    **tls_ca_input,
                ),
                opts=ResourceOptions.merge(renamed_is_new, ResourceOptions(depends_on=made_after)),
            )
            if args.rotate_root:
                # Vault sets a password of its own that no one else learns; the one in
                # state stops working. Again whenever the first password was sent or set again.
                vault.generic.Endpoint(
                    f"{name}-rotate-root{suffix}",
                    path=Output.concat(mount_path, "/rotate-root/", connection.name),
                    data_json="{}",
                    disable_read=True,
                    disable_delete=True,
                    opts=ResourceOptions.merge(
                        in_vault,
                        ResourceOptions(
                            depends_on=[connection],
                            replacement_trigger=Output.format("{0}/{1}", version, first_password.generation),
                        ),
                    ),
                )

            for role in plan.roles:
                vault_role = vault.database.SecretBackendRole(
                    f"{name}-role-{role.name}",
                    backend=mount_path,
                    name=role.name,
                    db_name=connection.name,
                    creation_statements=creation_statements(role, args.owner_role, args.schema),
                    revocation_statements=REVOCATION_STATEMENTS,
                    default_ttl=role.default_ttl_seconds,
                    max_ttl=role.max_ttl_seconds,
                    opts=renamed_is_new,
                )
                # Depends on the role, so it is deleted (revoking the leases) before the
                # role and the connection are; and on the grants, above all the group's
                # membership of the Vault login: from PostgreSQL 16 a live credential's
                # membership depends on it ("dependent privileges exist"), so a renamed
                # role's leases must go before its grants do, the connection staying.
                VaultLeaseRevoker(
                    f"{name}-leases-{role.name}",
                    address=args.vault_address,
                    vault_id=vault_id,
                    mount=mount_path,
                    role=vault_role.name,
                    connection=connection.name,
                    opts=ResourceOptions(parent=self, depends_on=[vault_role, *args.depends_on]),
                )

        roles = [role for plan in args.connections for role in plan.roles]
        self.mount_path = mount_path
        self.vault_id = vault_id
        self.credential_paths = {
            r.name: f"{args.mount_path}/creds/{r.name}" for r in sorted(roles, key=lambda r: r.name)
        }
        self.register_outputs({"mount_path": self.mount_path, "credential_paths": self.credential_paths})
