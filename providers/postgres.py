"""Dynamic resources for what `pulumi_postgresql` does not offer: tables
(which refuse a change that would drop rows), the tables a migration made
(which must exist, and are never dropped), role claims and the dev stack's
sample rows.
Roles, memberships and grants are `pulumi_postgresql` resources.

A dynamic provider cannot use an explicit `postgresql.Provider`, so these take
a `connection` input (see `components.pg_endpoint`); it is a secret input, so
the admin password stays encrypted in the state. Identifiers are always
composed with psycopg's `sql.Identifier`, values with query parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pulumi import Input, Output, ResourceOptions
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    ConfigureRequest,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from providers._shared import changed, gone, known, lazy_module, mark_prefix

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

# Loaded on first use, in the process that runs these providers: the program
# process only declares the resources and never needs psycopg.
pg = lazy_module("providers.pg_sql")

KEEP_TABLES_SETTING = "pgcreds:keepTablesOnDestroy"


# Where an object is: another server, database or (an application stack's own)
# schema means it must be made there.
SERVER_IDENTITY = ("host", "port", "database", "search_path")


def replaced_keys(olds: dict, news: dict, keys: Sequence[str]) -> list[str]:
    """Keys that force a replacement: the given ones, and `connection` when it
    names another server or database (the object must then be made there)."""
    old, new = olds.get("connection"), news.get("connection")
    if not isinstance(old, dict):
        return changed(olds, news, keys)
    # In a preview the new server may not exist yet (unknown): it is another one.
    moved = not isinstance(new, dict) or any(old.get(k) != new.get(k) for k in SERVER_IDENTITY)
    return changed(olds, news, keys) + (["connection"] if moved else [])


def _updated(olds: dict, news: dict, keys: Sequence[str]) -> list[str]:
    """Keys that need an in-place update. Any other change of `connection` (admin
    password, TLS settings) is one, so that later reads and deletes use it."""
    return changed(olds, news, tuple(keys) + ("connection",))


# --- role claims --------------------------------------------------------------


class _RoleClaimProvider(ResourceProvider):
    """Refuses, at preview, a role name that PostgreSQL already has and this
    stack did not create: `postgresql.Role` would otherwise plan a "create" that
    fails at `up`, and a role adopted by mistake could later be dropped. A claim
    is made before its role and is in the state before the role exists, so an
    interrupted `up` does not lock the stack out of its own roles."""

    def check(self, olds: dict, news: dict) -> CheckResult:
        connection = news.get("connection")
        if not isinstance(connection, dict) or (olds and not replaced_keys(olds, news, ("name",))):
            return CheckResult(news, [])  # the server is not known yet, or the role is ours already
        try:
            with pg.connect(connection) as conn:
                found = conn.execute(
                    "SELECT coalesce(shobj_description(oid, 'pg_authid'), '') FROM pg_roles WHERE rolname = %s",
                    (news["name"],),
                ).fetchone()
        except pg.PostgresUnreachable:
            # Nothing can be made there either; the check runs again (as the engine
            # checks every input again) when `up` reaches a server that answers.
            return CheckResult(news, [])
        if found is None:
            return CheckResult(news, [])
        mark = news.get("mark")
        if mark and found[0] == mark:
            return CheckResult(
                news,
                [
                    CheckFailure(
                        "name",
                        (
                            f"PostgreSQL's role {news['name']!r} was made by this stack (its comment: {mark!r}), but the "
                            "stack's state does not record it: the state was lost (`pulumi stack rm --force`, a wiped state "
                            f"database). Remove what the stack made, tables and their rows excepted: python -m deployer.orphans "
                            f"remove --stack {mark.rsplit('/', 1)[-1]}; then `make up` makes it again. Nothing was changed."
                        ),
                    )
                ],
            )
        made_by = f" (its comment: {found[0]!r})" if found[0].startswith(mark_prefix()) else ""
        return CheckResult(
            news,
            [
                CheckFailure(
                    "name",
                    (
                        f"PostgreSQL already has a role {news['name']!r} that this stack did not create{made_by}; it is never "
                        f"adopted, altered or dropped. Choose another name in {news['setting']}. Nothing was changed."
                    ),
                )
            ],
        )

    def create(self, props: dict) -> CreateResult:
        return CreateResult(props["name"], dict(props))

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        replaces = replaced_keys(olds, news, ("name",))  # another name, or another server
        return DiffResult(changes=bool(replaces or _updated(olds, news, ("setting",))), replaces=replaces)

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        return UpdateResult(dict(news))


class PgRoleClaim(Resource, module="postgresql", name="RoleClaim"):
    """This stack's claim on a role name; make the `postgresql.Role` depend on it.
    `setting` names the stack setting that chose the name, for the error; `mark`
    is the stack's (`stack_mark`), which tells its own roles after a lost state."""

    def __init__(
        self,
        resource_name: str,
        *,
        name: str,
        setting: str,
        connection: Input[dict],
        mark: str = "",
        opts: ResourceOptions | None = None,
    ):
        super().__init__(
            _RoleClaimProvider(),
            resource_name,
            {"name": name, "setting": setting, "connection": connection, "mark": mark},
            opts,
        )


class _RoleMarkProvider(ResourceProvider):
    """Writes the stack's mark into the comment of the roles it made, once they
    exist. It outlives the state: after a lost state the claims and
    `deployer.orphans` know the roles as this stack's. Nothing to delete: a
    comment goes with its role."""

    def _write(self, props: dict) -> None:
        with pg.connect(props["connection"]) as conn:
            for name in props["names"]:
                conn.execute(
                    pg.sql.SQL("COMMENT ON ROLE {} IS {}").format(
                        pg.sql.Identifier(name), pg.sql.Literal(props["mark"])
                    )
                )

    def create(self, props: dict) -> CreateResult:
        self._write(props)
        return CreateResult(props["mark"], dict(props))

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        return DiffResult(
            changes=bool(changed(olds, news, ("names", "mark")) or _updated(olds, news, ())),
            replaces=replaced_keys(olds, news, ()),
        )

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        self._write(news)
        return UpdateResult(dict(news))


class PgRoleMark(Resource, module="postgresql", name="RoleMark"):
    """The stack's mark (`stack_mark`) as the comment of the roles it made: one
    resource for a component's roles, made after them."""

    def __init__(
        self,
        resource_name: str,
        *,
        names: Input[list[str]],
        mark: str,
        connection: Input[dict],
        opts: ResourceOptions | None = None,
    ):
        super().__init__(
            _RoleMarkProvider(), resource_name, {"names": names, "mark": mark, "connection": connection}, opts
        )


# --- tables -------------------------------------------------------------------


class _HonoursKeepSetting(ResourceProvider):
    """Data is removed only when both the applied state and the stack's current
    settings say so: `pulumi destroy` does not run the program, so the state
    alone would not know that keepTablesOnDestroy was turned on after the last
    `up`. The engine hands dynamic providers the stack's config on configure."""

    keep_by_settings = True  # unset means the default, which is to keep

    def configure(self, req: ConfigureRequest) -> None:
        value = req.config.get(KEEP_TABLES_SETTING)
        self.keep_by_settings = value is None or str(value).lower() != "false"

    def may_remove_data(self, props: dict) -> bool:
        return not props.get("keep_on_destroy") and not self.keep_by_settings


class _TableProvider(_HonoursKeepSetting):
    """A table created from column definitions; refuses to drop data.

    `columns` is a list of [name, definition] pairs whose definitions come from
    the project's own code (`tables.py`), never from stack config.
    """

    def _row_count(self, props: dict) -> int:
        with pg.connect(props["connection"]) as conn, conn.cursor() as cur:
            if not pg.table_exists(cur, props["name"]):
                return 0
            return pg.row_count(cur, props["name"])

    def check(self, olds: dict, news: dict) -> CheckResult:
        # A change of name or columns means drop-and-create: refuse it at preview
        # time if the table holds data, before anything is changed.
        # A kept table (keepTablesOnDestroy) stays behind on the old server, so
        # only a table that would really be dropped is checked for rows.
        if olds and (
            changed(olds, news, ("name", "columns"))
            or ("connection" in replaced_keys(olds, news, ()) and not olds.get("keep_on_destroy"))
        ):
            rows = self._row_count(olds)
            if rows:
                return CheckResult(
                    news,
                    [
                        CheckFailure(
                            "columns",
                            (
                                f"table {olds['name']!r} holds {rows} rows and this change (of its columns, or of the "
                                "server or schema it lives in) would drop and recreate it. Nothing was changed. Migrate the "
                                "data by hand (ALTER TABLE; an application stack's tables now live in the schema named after "
                                "the application: ALTER TABLE ... SET SCHEMA <application>; or copy it to the new server) "
                                "and empty the table, or revert the change."
                            ),
                        )
                    ],
                )
        return CheckResult(news, [])

    def create(self, props: dict) -> CreateResult:
        name = pg.sql.Identifier(props["name"])
        columns = pg.sql.SQL(", ").join(
            pg.sql.SQL("{} {}").format(pg.sql.Identifier(column), pg.sql.SQL(definition))
            for column, definition in props["columns"]
        )
        wanted = [column for column, _ in props["columns"]]
        with pg.connect(props["connection"]) as conn, conn.cursor() as cur, conn.transaction():
            if props["connection"].get("search_path"):
                # An application's own schema belongs to its owner role: the login acts
                # through it to create there (PostgreSQL 16+: not by making it alone).
                pg.take_turns(cur, "table owner grants")
                pg.ensure_member(cur, props["owner"])
            # A table kept by an earlier destroy (keepTablesOnDestroy) is adopted with
            # its data, if it has the same columns; an empty one with others is remade.
            cur.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = %s ORDER BY ordinal_position",
                (props["name"],),
            )
            existing = [r[0] for r in cur.fetchall()]
            if existing and existing != wanted:
                cur.execute(pg.sql.SQL("SELECT count(*) FROM {}").format(name))
                if cur.fetchone()[0]:
                    raise ValueError(
                        f"table {props['name']!r} already exists with columns {existing} and holds "
                        f"rows; the program wants {wanted}. Migrate it by hand first."
                    )
                cur.execute(pg.sql.SQL("DROP TABLE {}").format(name))
            cur.execute(pg.sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(name, columns))
            pg.give_table(cur, props["name"], props["owner"])
        return CreateResult(props["name"], dict(props))

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        replaces = replaced_keys(olds, news, ("name", "columns"))
        changes = replaces or _updated(olds, news, ("owner", "keep_on_destroy"))
        return DiffResult(changes=bool(changes), replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, olds: dict, news: dict) -> UpdateResult:
        if olds.get("owner") != news.get("owner"):
            with pg.connect(news["connection"]) as conn, conn.cursor() as cur, conn.transaction():
                pg.give_table(cur, news["name"], news["owner"])
        return UpdateResult(dict(news))

    def read(self, id_: str, props: dict) -> ReadResult:
        with pg.connect(props["connection"]) as conn, conn.cursor() as cur:
            if not pg.table_exists(cur, id_):
                return gone()
        return ReadResult(id_, dict(props))

    def delete(self, id_: str, props: dict) -> None:
        if not self.may_remove_data(props):
            return
        with pg.connect(props["connection"]) as conn:
            conn.execute(pg.sql.SQL("DROP TABLE IF EXISTS {}").format(pg.sql.Identifier(id_)))


class PgTable(Resource, module="postgresql", name="Table"):
    """A table with the given columns, owned by `owner`."""

    name: Output[str]

    def __init__(
        self,
        resource_name: str,
        *,
        name: str,
        columns: Sequence[tuple[str, str]],
        owner: Input[str],
        connection: Input[dict],
        keep_on_destroy: bool,
        opts: ResourceOptions | None = None,
    ):
        super().__init__(
            _TableProvider(),
            resource_name,
            {
                "name": name,
                "columns": [list(c) for c in columns],
                "owner": owner,
                "keep_on_destroy": keep_on_destroy,
                "connection": connection,
            },
            opts,
        )


# --- tables made by migrations ----------------------------------------------------


class _ExistingTableProvider(ResourceProvider):
    """A table the program does not make (a migration did), named by a role's
    settings: it must exist, checked at preview; it is never altered or dropped."""

    def check(self, olds: dict, news: dict) -> CheckResult:
        connection = news.get("connection")
        if not isinstance(connection, dict):
            return CheckResult(news, [])  # the server is not known yet
        try:
            with pg.connect(connection) as conn, conn.cursor() as cur:
                owner = pg.table_owner(cur, news["name"])
                schema = pg.session_schema(cur)
        except pg.PostgresUnreachable:
            return CheckResult(news, [])
        if owner is None:
            return CheckResult(
                news,
                [
                    CheckFailure(
                        "name",
                        (
                            f"{news['setting']} names the table {news['name']!r}, which neither tables.py nor the database "
                            "has. Create it first (a migration, with a role of access: migrate), or correct the name. "
                            "Nothing was changed."
                        ),
                    )
                ],
            )
        wanted = news.get("owner")
        # (unknown in a preview of a stack whose owner role is not made yet: then it is checked at `up`)
        if known(wanted) and owner != wanted:
            return CheckResult(
                news,
                [
                    CheckFailure(
                        "name",
                        (
                            f"{news['setting']} names the table {schema}.{news['name']}, which belongs to {owner!r}, not to "
                            f"the stack's table owner {wanted!r}: its grants would fail halfway with `permission denied`. "
                            f"Hand it over first, as {owner!r} or a superuser: ALTER TABLE {schema}.{news['name']} OWNER TO "
                            f"{wanted}; (run migrations with a role of access: migrate, whose sessions act as {wanted!r}). "
                            "Nothing was changed."
                        ),
                    )
                ],
            )
        return CheckResult(news, [])

    def create(self, props: dict) -> CreateResult:
        return CreateResult(props["name"], dict(props))

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        replaces = replaced_keys(olds, news, ("name",))
        return DiffResult(changes=bool(replaces or _updated(olds, news, ("setting",))), replaces=replaces)

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        return UpdateResult(dict(news))

    def read(self, id_: str, props: dict) -> ReadResult:
        with pg.connect(props["connection"]) as conn, conn.cursor() as cur:
            if not pg.table_exists(cur, id_):
                return gone()
        return ReadResult(id_, dict(props))

    # No delete: the table belongs to the migrations that made it.


class PgExistingTable(Resource, module="postgresql", name="ExistingTable"):
    """A table a migration made, for grants to refer to; `setting` names the stack
    setting that named it, for the error when it does not exist."""

    name: Output[str]

    def __init__(
        self,
        resource_name: str,
        *,
        name: str,
        setting: str,
        connection: Input[dict],
        owner: Input[str] = "",
        opts: ResourceOptions | None = None,
    ):
        super().__init__(
            _ExistingTableProvider(),
            resource_name,
            {"name": name, "setting": setting, "connection": connection, "owner": owner},
            opts,
        )


# --- rows ---------------------------------------------------------------------


class _SampleRowsProvider(ResourceProvider):
    """The sample rows: every one that is missing is inserted (never a duplicate).
    Deleting the resource leaves the rows: they are data like any other row now
    (an application may have changed them), and they go with their table when
    the table is dropped. So a replacement, forced or not, never empties a table."""

    def _statement(self, props: dict, template: str) -> sql.Composed:
        return pg.sql.SQL(template).format(
            table=pg.sql.Identifier(props["table"]),
            columns=pg.sql.SQL(", ").join(pg.sql.Identifier(c) for c in props["columns"]),
            conditions=pg.sql.SQL(" AND ").join(
                pg.sql.SQL("{} = {}").format(pg.sql.Identifier(c), pg.sql.Placeholder()) for c in props["columns"]
            ),
            values=pg.sql.SQL(", ").join(pg.sql.Placeholder() for _ in props["columns"]),
        )

    def _missing(self, cur: psycopg.Cursor, props: dict) -> list[list]:
        find = self._statement(props, "SELECT 1 FROM {table} WHERE {conditions}")
        return [row for row in props["rows"] if cur.execute(find, row).fetchone() is None]

    def create(self, props: dict) -> CreateResult:
        with pg.connect(props["connection"]) as conn, conn.cursor() as cur, conn.transaction():
            missing = self._missing(cur, props)
            if missing:
                cur.executemany(self._statement(props, "INSERT INTO {table} ({columns}) VALUES ({values})"), missing)
        return CreateResult(f"{props['table']}-sample-rows", dict(props))

    def read(self, id_: str, props: dict) -> ReadResult:
        # Rows deleted by hand make the resource gone, so that the next `up` puts them back.
        with pg.connect(props["connection"]) as conn, conn.cursor() as cur:
            if not pg.table_exists(cur, props["table"]):
                return gone()
            # A preview's login may not read the rows: it keeps what the state says,
            # and the deploy's refresh, which may, puts back any that are missing.
            if pg.may_select(cur, props["table"]) and self._missing(cur, props):
                return gone()
        return ReadResult(id_, dict(props))

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        replaces = replaced_keys(olds, news, ("table", "columns", "rows"))
        changes = replaces or _updated(olds, news, ("keep_on_destroy",))
        return DiffResult(changes=bool(changes), replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        return UpdateResult(dict(news))


class PgSampleRows(Resource, module="postgresql", name="SampleRows"):
    """The rows that `table` must hold: the missing ones are inserted. Deleting
    it leaves the rows in place."""

    def __init__(
        self,
        resource_name: str,
        *,
        table: Input[str],
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        keep_on_destroy: bool,
        connection: Input[dict],
        opts: ResourceOptions | None = None,
    ):
        super().__init__(
            _SampleRowsProvider(),
            resource_name,
            {
                "table": table,
                "columns": list(columns),
                "rows": [list(r) for r in rows],
                "keep_on_destroy": keep_on_destroy,
                "connection": connection,
            },
            opts,
        )
