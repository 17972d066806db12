"""AccessRoles: one NOLOGIN group role per application role, holding its grants,
and the dedicated logins (`vault_admin`, or one per connection with rotate-root)
that Vault uses to create users in them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_postgresql as postgresql
import pulumi_random as random
from pulumi import Input, Output, ResourceOptions

from components.app_role import AppRole
from components.pg_endpoint import PgEndpoint
from components.vault_connections import VaultConnection, username_prefix
from providers.postgres import PgExistingTable, PgTable
from providers.privileges import PrivilegeAudit

PASSWORD_LENGTH = 40


@dataclass(frozen=True)
class AccessRolesArgs:
    endpoint: PgEndpoint
    """The PostgreSQL server and its provider."""
    roles: tuple[AppRole, ...]
    """Application roles; each gets a group role named `AppRole.group_role`."""
    tables: Mapping[str, PgTable]
    """The program's tables, by name. A role may name others (made by a migration):
    those must exist, checked at preview, and are never dropped."""
    sequences: Mapping[str, tuple[str, ...]]
    """The sequences of each table's serial columns, by table name (INSERT needs them)."""
    vault_connections: tuple[VaultConnection, ...]
    """Vault's connections: each names the LOGIN role it uses (never the superuser)
    and the roles whose users that login creates."""
    owner_role: Input[str]
    """The table owner role, which a `migrate` role's users act as."""
    per_table_grants_in_state: bool = False
    """The stack's last update was made by a version that granted per table: those
    grants are declared once more, retained, so that they go without a REVOKE."""
    schema: str = "public"
    """The schema of the tables (an application stack's own: each group gets USAGE on it)."""
    schema_made: Sequence[pulumi.Resource] = ()
    """What makes that schema, which the USAGE grants wait for."""


@dataclass(frozen=True)
class VaultLogin:
    username: Output[str]
    password: Output[str]
    """A secret Output (with rotate-root, only the first password: Vault replaces it)."""


class AccessRoles(pulumi.ComponentResource):
    vault_logins: dict[str, VaultLogin]
    """By login name."""
    grants: list[pulumi.Resource]
    """Everything a credential needs: table and sequence grants, the logins' memberships."""
    declared_privileges: Output[dict]
    """What the settings grant, as the privilege audit compares it with the catalog."""

    def __init__(self, name: str, args: AccessRolesArgs, opts: ResourceOptions | None = None):
        super().__init__("pgcreds:access:AccessRoles", name, None, opts)
        on_server = args.endpoint.resource_options(parent=self)

        # A login's memberships are the GrantRole resources below; without
        # ignore_changes every refresh would plan to remove them.
        # Concurrent statements that rewrite the same catalog row fail with "tuple
        # concurrently updated" (measured: two DROP OWNED of roles that hold
        # privileges on one schema; two GRANTs on one table). So the roles form one
        # chain, created one after another and dropped in reverse, after the tables
        # and before them; and the grants on one table take turns.
        previous_role: pulumi.Resource | None = None
        logins: dict[str, postgresql.Role] = {}
        self.vault_logins = {}
        for login in dict.fromkeys(c.login for c in args.vault_connections):
            # One name per login, so a new login (rotate-root: a new connection) is a
            # new resource and the old one stays until its connection is gone.
            key = f"vault-login-{login}"
            # Nothing of a login, not even its password, before its name is claimed.
            claim = args.endpoint.claim(f"{name}-{key}", parent=self, name=login, setting="vaultAdminRole")
            # Letters and digits only: Vault puts the password into a connection URL.
            password = random.RandomPassword(
                f"{name}-{key}-password",
                length=PASSWORD_LENGTH,
                special=False,
                opts=ResourceOptions(parent=self, depends_on=[claim]),
            )
            previous_role = logins[login] = args.endpoint.claimed_role(
                f"{name}-{key}",
                parent=self,
                name=login,
                setting="vaultAdminRole",
                claim=claim,
                login=True,
                create_role=True,
                password=password.result,
                opts=ResourceOptions(
                    ignore_changes=["roles"],
                    depends_on=list(args.tables.values()) + ([previous_role] if previous_role else []),
                ),
            )
            self.vault_logins[login] = VaultLogin(username=logins[login].name, password=Output.secret(password.result))
        previous_grant: dict[str, pulumi.Resource] = {}

        def after(*resources: pulumi.Resource | None) -> ResourceOptions:
            return ResourceOptions.merge(on_server, ResourceOptions(depends_on=[r for r in resources if r]))

        self.grants = []
        previous_usage: pulumi.Resource | None = None
        tables: dict[str, PgTable | PgExistingTable] = dict(args.tables)
        groups: list[postgresql.Role] = []
        for role in args.roles:
            group = args.endpoint.claimed_role(
                f"{name}-{role.group_role}",
                parent=self,
                name=role.group_role,
                setting=f"roles (the role {role.name!r})",
                login=False,
                # A migrate group's membership of the owner is its GrantRole below.
                opts=ResourceOptions(
                    depends_on=[previous_role] if previous_role else [],
                    ignore_changes=["roles"] if role.acts_as_owner else None,
                ),
            )
            previous_role = group
            groups.append(group)
            if role.acts_as_owner:
                # What its users create (their sessions SET ROLE to the owner) is the owner's.
                self.grants.append(
                    postgresql.GrantRole(
                        f"{name}-{role.group_role}-owner",
                        role=group.name,
                        grant_role=args.owner_role,
                        opts=after(group),
                    )
                )
            for table_name in role.tables:
                if table_name not in tables:
                    tables[table_name] = PgExistingTable(
                        f"{name}-existing-{table_name}",
                        name=table_name,
                        setting=f"{args.endpoint.setting_prefix}roles (the role {role.name!r}, tables)",
                        connection=args.endpoint.admin_connection(args.schema),
                        owner=args.owner_role,
                        opts=ResourceOptions(parent=self),
                    )
            # One grant per role and kind of object, however many tables it covers.
            # Its update (and create) revokes and grants in one transaction, so a
            # live credential never misses a privilege it keeps; and it is never
            # revoked by a delete or a replacement (retained): what the settings no
            # longer grant, the privilege audit below takes back once the new grants hold.
            kept = ResourceOptions(retain_on_delete=True)
            role_tables = sorted(role.tables)
            role_grants = []
            # A migrate role names no tables and gets none: an empty `objects` would
            # mean every table of the schema to the provider, a REVOKE that races
            # the other roles' grants on the same tables ("tuple concurrently updated").
            if role.table_privileges and role_tables:
                grant = postgresql.Grant(
                    f"{name}-{role.group_role}-on-tables",
                    database=args.endpoint.database,
                    role=group.name,
                    schema=args.schema,
                    object_type="table",
                    objects=[tables[t].name for t in role_tables],
                    privileges=list(role.table_privileges),
                    opts=ResourceOptions.merge(after(*(previous_grant.get(t) for t in role_tables)), kept),
                )
                self.grants.append(grant)
                previous_grant.update({t: grant for t in role_tables})
                role_grants.append(grant)
            sequences = sorted(s for t in role_tables for s in args.sequences.get(t, ()))
            # Never an empty `objects`: the provider reads that as every sequence in the schema.
            if role.sequence_privileges and sequences:
                sequence_tables = [t for t in role_tables if args.sequences.get(t)]
                grant = postgresql.Grant(
                    f"{name}-{role.group_role}-on-sequences",
                    database=args.endpoint.database,
                    role=group.name,
                    schema=args.schema,
                    object_type="sequence",
                    objects=sequences,
                    privileges=list(role.sequence_privileges),
                    opts=ResourceOptions.merge(
                        after(*(tables[t] for t in sequence_tables), *(previous_grant.get(t) for t in sequence_tables)),
                        kept,
                    ),
                )
                self.grants.append(grant)
                role_grants.append(grant)
                previous_grant.update({t: grant for t in sequence_tables})
            if args.schema != "public" and role.table_privileges:
                # An own schema: its groups need USAGE on it. One after another (one
                # catalog row), the first after the schema is made.
                usage = postgresql.Grant(
                    f"{name}-{role.group_role}-schema-usage",
                    database=args.endpoint.database,
                    role=group.name,
                    schema=args.schema,
                    object_type="schema",
                    privileges=["USAGE"],
                    opts=after(group, *args.schema_made, previous_usage),
                )
                self.grants.append(usage)
                previous_usage = usage
            if args.per_table_grants_in_state:
                self.grants += self._forget_per_table_grants(
                    name,
                    args,
                    role,
                    group,
                    tables,
                    lambda *more, role_grants=role_grants, kept=kept: ResourceOptions.merge(
                        after(*role_grants, *more), kept
                    ),
                )
            # ADMIN OPTION is what lets a login put new users IN ROLE the group
            # (PostgreSQL 16+ no longer accepts CREATEROLE alone for that). Only the
            # logins of the connections that issue this role's users get it.
            for login in dict.fromkeys(c.login for c in args.vault_connections if role in c.roles):
                self.grants.append(
                    postgresql.GrantRole(
                        f"{name}-{role.group_role}-{login}",
                        role=logins[login].name,
                        grant_role=group.name,
                        with_admin_option=True,
                        opts=on_server,
                    )
                )

        # Whatever else the groups or their users hold (granted by hand) is found at
        # preview and revoked by `up`, once the grants above are in place.
        self.declared_privileges = Output.all(
            database=args.endpoint.database,
            admin_user=args.endpoint.admin_user,
            owner=args.owner_role,
            logins=[login.name for login in logins.values()],
        ).apply(
            lambda known: declared_privileges(
                args, known["database"], known["admin_user"], known["logins"], known["owner"]
            )
        )
        PrivilegeAudit(
            f"{name}-privilege-audit",
            declared=self.declared_privileges,
            connection=args.endpoint.admin_connection(args.schema),
            preview=pulumi.runtime.is_dry_run(),
            opts=ResourceOptions(parent=self, depends_on=self.grants + ([previous_role] if previous_role else [])),
        )

        args.endpoint.mark(name, parent=self, roles=[*logins.values(), *groups])
        self.register_outputs(
            {
                "vault_logins": {login: v.username for login, v in self.vault_logins.items()},
                "group_roles": [r.group_role for r in args.roles],
            }
        )

    @staticmethod
    def _forget_per_table_grants(
        name: str,
        args: AccessRolesArgs,
        role: AppRole,
        group: postgresql.Role,
        tables: Mapping[str, PgTable | PgExistingTable],
        retained_after,
    ) -> list[pulumi.Resource]:
        """Earlier versions made a grant per table (and per table's sequences), whose
        delete would revoke what the grants per role now hold. Declared once more as
        they were, but retained (`retained_after` gives the options): the next `up`
        forgets them without a REVOKE."""
        forgotten: list[pulumi.Resource] = []
        for table_name in role.tables:
            grant = postgresql.Grant(
                f"{name}-{role.group_role}-{table_name}",
                database=args.endpoint.database,
                role=group.name,
                schema="public",
                object_type="table",
                objects=[tables[table_name].name],
                privileges=list(role.table_privileges),
                opts=retained_after(),
            )
            forgotten.append(grant)
            sequences = args.sequences.get(table_name, ())
            if role.sequence_privileges and sequences:
                forgotten.append(
                    postgresql.Grant(
                        f"{name}-{role.group_role}-{table_name}-sequences",
                        database=args.endpoint.database,
                        role=group.name,
                        schema="public",
                        object_type="sequence",
                        objects=list(sequences),
                        privileges=list(role.sequence_privileges),
                        opts=retained_after(grant),
                    )
                )
        return forgotten


def declared_privileges(
    args: AccessRolesArgs, database: str, admin_user: str, logins: list[str], owner_role: str
) -> dict:
    """The privilege audit's view of the settings (`clients.privilege_audit.Declared`)."""
    groups = {}
    for role in args.roles:
        groups[role.group_role] = {
            "tables": {table: list(role.table_privileges) for table in role.tables},
            "sequences": {
                sequence: list(role.sequence_privileges)
                for table in role.tables
                for sequence in (args.sequences.get(table, ()) if role.sequence_privileges else ())
            },
        }
    prefixes = {
        role.group_role: username_prefix(connection.username_template, role.name)
        for connection in args.vault_connections
        for role in connection.roles
    }
    relations = sorted(set(args.tables) | {s for sequences in args.sequences.values() for s in sequences})
    memberships = {role.group_role: [owner_role] for role in args.roles if role.acts_as_owner}
    return {
        "database": database,
        "schema": args.schema,
        "groups": groups,
        "user_prefixes": prefixes,
        "vault_logins": sorted(logins),
        "admin_user": admin_user,
        "program_relations": relations,
        "memberships": memberships,
    }
