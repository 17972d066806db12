"""AppSchema: the application's tables, owned by a NOLOGIN owner role."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
from pulumi import ResourceOptions

from components.pg_endpoint import PgEndpoint
from providers.postgres import PgSampleRows, PgTable
from tables import TableSpec


@dataclass(frozen=True)
class AppSchemaArgs:
    endpoint: PgEndpoint
    """The PostgreSQL server, its admin login and its provider."""
    tables: tuple[TableSpec, ...]
    """Tables to create."""
    owner_role: str
    """NOLOGIN role that owns the tables, so no login role (and no Vault user) does."""
    sample_data: bool
    """Insert each table's sample rows when it is empty (dev stack)."""
    keep_tables_on_destroy: bool
    """Leave the tables and their data in place on `pulumi destroy`."""


class AppSchema(pulumi.ComponentResource):
    tables: dict[str, PgTable]
    """The created tables, by name."""
    sequences: dict[str, tuple[str, ...]]
    """The sequences of each table's serial columns, by table name."""

    def __init__(self, name: str, args: AppSchemaArgs, opts: Optional[ResourceOptions] = None):
        super().__init__("pgcreds:schema:AppSchema", name, None, opts)
        # Tables are dynamic resources (no provider offers them): they get the login as an input.
        connection = args.endpoint.admin_connection()
        owner = args.endpoint.claimed_role(f"{name}-owner", parent=self, name=args.owner_role,
                                           setting="pgcreds:tableOwnerRole", login=False)
        self.owner_role = owner.name
        self.tables = {}
        self.sequences = {spec.name: spec.sequences for spec in args.tables}
        for spec in args.tables:
            table = PgTable(f"{name}-{spec.name}", name=spec.name, columns=spec.columns, owner=owner.name,
                            keep_on_destroy=args.keep_tables_on_destroy, connection=connection,
                            opts=ResourceOptions(parent=self))
            self.tables[spec.name] = table
            if args.sample_data and spec.sample_rows:
                PgSampleRows(f"{name}-{spec.name}-sample-rows", table=table.name, columns=spec.sample_columns,
                             rows=spec.sample_rows, keep_on_destroy=args.keep_tables_on_destroy,
                             connection=connection, opts=ResourceOptions(parent=self))
        self.register_outputs({"owner_role": owner.name, "tables": [t.name for t in self.tables.values()]})
