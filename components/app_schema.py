"""AppSchema: the application's tables, owned by a NOLOGIN owner role (in `public`,
or in an application stack's own schema, owned by that role too)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_postgresql as postgresql
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
    schema: str = "public"
    """The schema the tables are in; another than `public` is made, owned by the owner role."""


class AppSchema(pulumi.ComponentResource):
    tables: dict[str, PgTable]
    """The created tables, by name."""
    sequences: dict[str, tuple[str, ...]]
    """The sequences of each table's serial columns, by table name."""

    def __init__(self, name: str, args: AppSchemaArgs, opts: ResourceOptions | None = None):
        super().__init__("pgcreds:schema:AppSchema", name, None, opts)
        # Tables are dynamic resources (no provider offers them): they get the login as an input.
        connection = args.endpoint.admin_connection(args.schema)
        owner = args.endpoint.claimed_role(
            f"{name}-owner", parent=self, name=args.owner_role, setting="tableOwnerRole", login=False
        )
        args.endpoint.mark(name, parent=self, roles=[owner])
        self.owner_role = owner.name
        self.schema = args.schema
        self.made: list[pulumi.Resource] = [owner]
        """What the tables and their grants must wait for: the owner role, and its schema."""
        if args.schema != "public":
            # Kept with kept tables (a schema with tables in it cannot be dropped).
            self.made.append(
                postgresql.Schema(
                    f"{name}-schema",
                    name=args.schema,
                    owner=owner.name,
                    database=args.endpoint.database,
                    opts=ResourceOptions.merge(
                        args.endpoint.resource_options(self),
                        ResourceOptions(depends_on=[owner], retain_on_delete=args.keep_tables_on_destroy),
                    ),
                )
            )
        self.tables = {}
        self.sequences = {spec.name: spec.sequences for spec in args.tables}
        for spec in args.tables:
            table = PgTable(
                f"{name}-{spec.name}",
                name=spec.name,
                columns=spec.columns,
                owner=owner.name,
                keep_on_destroy=args.keep_tables_on_destroy,
                connection=connection,
                opts=ResourceOptions(parent=self, depends_on=self.made),
            )
            self.tables[spec.name] = table
            if args.sample_data and spec.sample_rows:
                PgSampleRows(
                    f"{name}-{spec.name}-sample-rows",
                    table=table.name,
                    columns=spec.sample_columns,
                    rows=spec.sample_rows,
                    keep_on_destroy=args.keep_tables_on_destroy,
                    connection=connection,
                    opts=ResourceOptions(parent=self),
                )
        self.register_outputs({"owner_role": owner.name, "tables": [t.name for t in self.tables.values()]})
