"""VaultDatabaseSecrets: a database secrets engine mount, its PostgreSQL
connection (as vault_admin) and one Vault role per application role."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
from pulumi import Input, Output, ResourceOptions

from components.app_role import AppRole
from components.pg_endpoint import PgEndpoint
from providers.vault import VaultDatabaseConnection, VaultDatabaseMount, VaultDatabaseRole


def creation_statements(role: AppRole) -> list[str]:
    """A login role that expires with its lease and inherits the group's grants:
    one statement however many tables the group covers."""
    return [
        'CREATE ROLE "{{name}}" WITH LOGIN PASSWORD \'{{password}}\' '
        f"VALID UNTIL '{{{{expiration}}}}' IN ROLE \"{role.group_role}\";"
    ]


# Vault's default revocation fails for a non-superuser admin, so every role has
# these. One dollar-quoted block (Vault runs it whole, not split on ';'): take
# membership of the user (needed to end its sessions and reassign its objects),
# end its open sessions, hand anything it owns to vault_admin, drop it. A user
# that is already gone is not an error, so a lease can always be revoked.
REVOCATION_STATEMENTS = ["""DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = '{{name}}') THEN
    EXECUTE format('GRANT %I TO CURRENT_USER', '{{name}}');
    PERFORM pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE usename = '{{name}}';
    EXECUTE format('REASSIGN OWNED BY %I TO CURRENT_USER', '{{name}}');
    EXECUTE format('DROP OWNED BY %I', '{{name}}');
    EXECUTE format('DROP ROLE %I', '{{name}}');
  END IF;
END
$$;"""]


@dataclass(frozen=True)
class VaultDatabaseSecretsArgs:
    endpoint: PgEndpoint
    """The PostgreSQL server Vault connects to."""
    vault_address: str
    """Vault API address, e.g. http://127.0.0.1:8200 (the token comes from VAULT_TOKEN)."""
    mount_path: str
    """Mount path of the database secrets engine."""
    connection_name: str
    """Name of the Vault connection (`<mount>/config/<name>`)."""
    admin_username: Input[str]
    """The PostgreSQL role Vault logs in as."""
    admin_password: Output[str]
    """Its password, a secret Output."""
    roles: tuple[AppRole, ...]
    """One Vault role each, at `<mount>/roles/<name>`."""
    depends_on: Sequence[pulumi.Resource] = ()
    """Grants that must exist before credentials can be issued."""


class VaultDatabaseSecrets(pulumi.ComponentResource):
    mount_path: Output[str]
    credential_paths: dict[str, str]
    """`<mount>/creds/<role>` per application role."""

    def __init__(self, name: str, args: VaultDatabaseSecretsArgs, opts: Optional[ResourceOptions] = None):
        super().__init__("pgcreds:vault:VaultDatabaseSecrets", name, None, opts)
        mount = VaultDatabaseMount(f"{name}-mount", address=args.vault_address, path=args.mount_path,
                                   description="Short-lived PostgreSQL credentials (pg-dynamic-creds)",
                                   opts=ResourceOptions(parent=self))
        connection_url = args.endpoint.vault_connection_url()

        # Vault keeps username_template on the connection, so roles with their own
        # template get a connection of their own; the others share the default one.
        connections: dict[Optional[str], tuple[str, VaultDatabaseConnection]] = {}
        for template in dict.fromkeys(r.username_template for r in args.roles):
            members = [r.name for r in args.roles if r.username_template == template]
            suffix = "" if template is None else f"-{members[0]}"
            connection_name = args.connection_name + suffix
            connections[template] = (connection_name, VaultDatabaseConnection(
                f"{name}-connection{suffix}", address=args.vault_address, mount=mount.path, name=connection_name,
                connection_url=connection_url, username=args.admin_username,
                password=Output.secret(args.admin_password), allowed_roles=members,
                username_template=template,
                opts=ResourceOptions(parent=self, depends_on=list(args.depends_on))))

        for role in args.roles:
            connection_name, connection = connections[role.username_template]
            VaultDatabaseRole(
                f"{name}-role-{role.name}", address=args.vault_address, mount=mount.path, name=role.name,
                db_name=connection_name, creation_statements=creation_statements(role),
                revocation_statements=REVOCATION_STATEMENTS,
                default_ttl=role.default_ttl_seconds, max_ttl=role.max_ttl_seconds,
                opts=ResourceOptions(parent=self, depends_on=[connection]))

        self.mount_path = mount.path
        self.credential_paths = {r.name: f"{args.mount_path}/creds/{r.name}" for r in args.roles}
        self.register_outputs({"mount_path": self.mount_path, "credential_paths": self.credential_paths})
