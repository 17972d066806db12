"""AccessRoles: one NOLOGIN group role per application role, holding its grants,
and the dedicated `vault_admin` login that Vault uses to create users in them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import pulumi
from pulumi import Output, ResourceOptions

from components.app_role import AppRole
from components.pg_endpoint import PgEndpoint
from providers.postgres import PgRole, PgRoleMembership, PgTable, PgTableGrant
from providers.secrets import RandomPassword


@dataclass(frozen=True)
class AccessRolesArgs:
    endpoint: PgEndpoint
    """The PostgreSQL server and admin login."""
    roles: tuple[AppRole, ...]
    """Application roles; each gets a group role named `AppRole.group_role`."""
    tables: Mapping[str, PgTable]
    """The tables the roles refer to, by name."""
    vault_admin_role: str
    """Name of the LOGIN role Vault logs in as (never the superuser)."""


class AccessRoles(pulumi.ComponentResource):
    vault_admin_username: Output[str]
    vault_admin_password: Output[str]
    """A secret Output."""
    grants: list[PgTableGrant]

    def __init__(self, name: str, args: AccessRolesArgs, opts: Optional[ResourceOptions] = None):
        super().__init__("pgcreds:access:AccessRoles", name, None, opts)
        child = ResourceOptions(parent=self)
        connection = args.endpoint.admin_connection()

        password = RandomPassword(f"{name}-vault-admin-password", opts=child)
        vault_admin = PgRole(f"{name}-vault-admin", name=args.vault_admin_role, login=True, create_role=True,
                             password=password.result, connection=connection, opts=child)

        self.grants = []
        for role in args.roles:
            group = PgRole(f"{name}-{role.group_role}", name=role.group_role, connection=connection, opts=child)
            for table_name in role.tables:
                table = args.tables[table_name]
                self.grants.append(PgTableGrant(
                    f"{name}-{role.group_role}-{table_name}", role=group.name, table=table.name,
                    privileges=role.table_privileges, sequence_privileges=role.sequence_privileges,
                    connection=connection, opts=child))
            # ADMIN OPTION is what lets vault_admin put new users IN ROLE the group
            # (PostgreSQL 16+ no longer accepts CREATEROLE alone for that).
            self.grants.append(PgRoleMembership(
                f"{name}-{role.group_role}-vault-admin", group=group.name, member=vault_admin.name,
                admin_option=True, connection=connection, opts=child))

        self.vault_admin_username = vault_admin.name
        self.vault_admin_password = Output.secret(password.result)
        self.register_outputs({"vault_admin_username": self.vault_admin_username,
                               "group_roles": [r.group_role for r in args.roles]})
