"""Dynamic resources for what `pulumi_postgresql` does not offer: tables
(which refuse a change that would drop rows) and the dev stack's sample rows.
Roles, memberships and grants are `pulumi_postgresql` resources.

A dynamic provider cannot use an explicit `postgresql.Provider`, so these take
a `connection` input (see `components.pg_endpoint`); it is a secret input, so
the admin password stays encrypted in the state. Identifiers are always
composed with psycopg's `sql.Identifier`, values with query parameters.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import psycopg
from psycopg import sql
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

from providers._shared import ca_file, changed, gone

CONNECT_TIMEOUT_SECONDS = 10
KEEP_TABLES_SETTING = "pgcreds:keepTablesOnDestroy"


class PostgresUnreachable(psycopg.OperationalError):
    """PostgreSQL could not be reached, refused the login, or went away during a
    statement (an OperationalError, as psycopg's own, with a message naming it)."""


class _NamingCursor(psycopg.Cursor):
    """A statement cut off by the server (shut down, restarted, connection lost)
    is reported naming PostgreSQL and its address, not only psycopg's words."""

    def execute(self, query, params=None, **kwargs):
        try:
            return super().execute(query, params, **kwargs)
        except (psycopg.errors.AdminShutdown, psycopg.errors.CrashShutdown, psycopg.OperationalError) as error:
            info = self.connection.info
            raise PostgresUnreachable(
                f"PostgreSQL at {info.host}:{info.port} (database {info.dbname!r}) stopped answering during a "
                f"statement: {str(error).strip()}. Once it runs again, a later `pulumi up` picks up where "
                "this one stopped.") from None


def connect(connection: dict[str, Any]) -> psycopg.Connection:
    """Opens an autocommit connection from a `connection` input. The server's CA
    comes as a file path (`sslrootcert`) or as PEM text (`sslrootcert_pem`)."""
    sslrootcert = connection.get("sslrootcert") or None
    if connection.get("sslrootcert_pem"):
        sslrootcert = ca_file(connection["sslrootcert_pem"])
    try:
        return psycopg.connect(
            host=connection["host"],
            port=int(connection["port"]),
            dbname=connection["database"],
            user=connection["user"],
            password=connection["password"],
            sslmode=connection.get("sslmode") or "prefer",
            sslrootcert=sslrootcert,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            autocommit=True,
            application_name="pg-dynamic-creds",
            cursor_factory=_NamingCursor,
        )
    except psycopg.OperationalError as error:
        # `from None`: the message carries psycopg's text; the chained traceback is noise.
        raise PostgresUnreachable(
            f"cannot connect to PostgreSQL at {connection['host']}:{int(connection['port'])} "
            f"(database {connection['database']!r}, user {connection['user']!r}): {str(error).strip()}. "
            "Check that the server is running and the pgcreds:postgres* settings; "
            "a later `pulumi up` picks up where this one stopped."
        ) from None


SERVER_IDENTITY = ("host", "port", "database")


def _replaced(olds: dict, news: dict, keys: Sequence[str]) -> list[str]:
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


def _ensure_member(cur: psycopg.Cursor, role: str) -> None:
    """Makes the admin a member of `role`. A superuser is one already; a
    CREATEROLE admin such as Aiven's avnadmin is not, yet needs to be to hand a
    table to the role, end its sessions or reassign what it owns."""
    cur.execute("SELECT pg_has_role(current_user, %s, 'MEMBER')", (role,))
    if not cur.fetchone()[0]:
        cur.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role)))


def _take_turns(cur: psycopg.Cursor, topic: str) -> None:
    """Pulumi creates resources in parallel, and concurrent GRANTs that touch the
    same catalog row collide ("tuple concurrently updated", "duplicate key"):
    those on one `topic` take turns, until the transaction ends."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"pgcreds: {topic}",))


def _give_table(cur: psycopg.Cursor, table: str, owner: str) -> None:
    """ALTER TABLE ... OWNER TO, as a non-superuser admin may: it must be a
    member of the new owner, and the owner needs CREATE on the schema."""
    _take_turns(cur, "table owner grants")
    _ensure_member(cur, owner)
    schema = cur.execute("SELECT current_schema()").fetchone()[0]
    if not cur.execute("SELECT has_schema_privilege(%s, %s, 'CREATE')", (owner, schema)).fetchone()[0]:
        cur.execute(sql.SQL("GRANT CREATE ON SCHEMA {} TO {}").format(sql.Identifier(schema), sql.Identifier(owner)))
    cur.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(table), sql.Identifier(owner)))


def _table_exists(cur: psycopg.Cursor, name: str) -> bool:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (sql.Identifier(name).as_string(cur),))
    return bool(cur.fetchone()[0])


# --- role claims --------------------------------------------------------------


class _RoleClaimProvider(ResourceProvider):
    """Refuses, at preview, a role name that PostgreSQL already has and this
    stack did not create: `postgresql.Role` would otherwise plan a "create" that
    fails at `up`, and a role adopted by mistake could later be dropped. A claim
    is made before its role and is in the state before the role exists, so an
    interrupted `up` does not lock the stack out of its own roles."""

    def check(self, olds: dict, news: dict) -> CheckResult:
        connection = news.get("connection")
        if not isinstance(connection, dict) or (olds and not _replaced(olds, news, ("name",))):
            return CheckResult(news, [])  # the server is not known yet, or the role is ours already
        try:
            with connect(connection) as conn:
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (news["name"],)).fetchone()
        except PostgresUnreachable:
            # Nothing can be made there either; the check runs again (as the engine
            # checks every input again) when `up` reaches a server that answers.
            return CheckResult(news, [])
        if exists:
            return CheckResult(news, [CheckFailure("name", (
                f"PostgreSQL already has a role {news['name']!r} that this stack did not create; it is never "
                f"adopted, altered or dropped. Choose another name in {news['setting']}. Nothing was changed."))])
        return CheckResult(news, [])

    def create(self, props: dict) -> CreateResult:
        return CreateResult(props["name"], dict(props))

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        replaces = _replaced(olds, news, ("name",))  # another name, or another server
        return DiffResult(changes=bool(replaces or _updated(olds, news, ("setting",))), replaces=replaces)

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        return UpdateResult(dict(news))


class PgRoleClaim(Resource, module="postgresql", name="RoleClaim"):
    """This stack's claim on a role name; make the `postgresql.Role` depend on it.
    `setting` names the stack setting that chose the name, for the error."""

    def __init__(self, resource_name: str, *, name: str, setting: str, connection: Input[dict],
                 opts: Optional[ResourceOptions] = None):
        super().__init__(_RoleClaimProvider(), resource_name,
                         {"name": name, "setting": setting, "connection": connection}, opts)


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
        with connect(props["connection"]) as conn, conn.cursor() as cur:
            if not _table_exists(cur, props["name"]):
                return 0
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(props["name"])))
            return cur.fetchone()[0]

    def check(self, olds: dict, news: dict) -> CheckResult:
        # A change of name or columns means drop-and-create: refuse it at preview
        # time if the table holds data, before anything is changed.
        # A kept table (keepTablesOnDestroy) stays behind on the old server, so
        # only a table that would really be dropped is checked for rows.
        if olds and (changed(olds, news, ("name", "columns"))
                     or ("connection" in _replaced(olds, news, ()) and not olds.get("keep_on_destroy"))):
            rows = self._row_count(olds)
            if rows:
                return CheckResult(news, [CheckFailure("columns", (
                    f"table {olds['name']!r} holds {rows} rows and this change (of its columns, or of the "
                    "server it lives on) would drop and recreate it. Nothing was changed. Migrate the data by "
                    "hand (ALTER TABLE, or copy it to the new server) and empty the table, or revert the change."))])
        return CheckResult(news, [])

    def create(self, props: dict) -> CreateResult:
        name = sql.Identifier(props["name"])
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(column), sql.SQL(definition))
            for column, definition in props["columns"])
        wanted = [column for column, _ in props["columns"]]
        with connect(props["connection"]) as conn, conn.cursor() as cur, conn.transaction():
            # A table kept by an earlier destroy (keepTablesOnDestroy) is adopted with
            # its data, if it has the same columns; an empty one with others is remade.
            cur.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                        "AND table_name = %s ORDER BY ordinal_position", (props["name"],))
            existing = [r[0] for r in cur.fetchall()]
            if existing and existing != wanted:
                cur.execute(sql.SQL("SELECT count(*) FROM {}").format(name))
                if cur.fetchone()[0]:
                    raise ValueError(f"table {props['name']!r} already exists with columns {existing} and holds "
                                     f"rows; the program wants {wanted}. Migrate it by hand first.")
                cur.execute(sql.SQL("DROP TABLE {}").format(name))
            cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(name, columns))
            _give_table(cur, props["name"], props["owner"])
        return CreateResult(props["name"], dict(props))

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        replaces = _replaced(olds, news, ("name", "columns"))
        changes = replaces or _updated(olds, news, ("owner", "keep_on_destroy"))
        return DiffResult(changes=bool(changes), replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, olds: dict, news: dict) -> UpdateResult:
        if olds.get("owner") != news.get("owner"):
            with connect(news["connection"]) as conn, conn.cursor() as cur, conn.transaction():
                _give_table(cur, news["name"], news["owner"])
        return UpdateResult(dict(news))

    def read(self, id_: str, props: dict) -> ReadResult:
        with connect(props["connection"]) as conn, conn.cursor() as cur:
            if not _table_exists(cur, id_):
                return gone()
        return ReadResult(id_, dict(props))

    def delete(self, id_: str, props: dict) -> None:
        if not self.may_remove_data(props):
            return
        with connect(props["connection"]) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(id_)))


class PgTable(Resource, module="postgresql", name="Table"):
    """A table with the given columns, owned by `owner`."""

    name: Output[str]

    def __init__(self, resource_name: str, *, name: str, columns: Sequence[tuple[str, str]],
                 owner: Input[str], connection: Input[dict], keep_on_destroy: bool,
                 opts: Optional[ResourceOptions] = None):
        super().__init__(_TableProvider(), resource_name, {
            "name": name, "columns": [list(c) for c in columns], "owner": owner,
            "keep_on_destroy": keep_on_destroy, "connection": connection,
        }, opts)


# --- rows ---------------------------------------------------------------------


class _SampleRowsProvider(ResourceProvider):
    """The sample rows: every one that is missing is inserted (never a duplicate).
    Deleting the resource leaves the rows: they are data like any other row now
    (an application may have changed them), and they go with their table when
    the table is dropped. So a replacement, forced or not, never empties a table."""

    def _statement(self, props: dict, template: str) -> sql.Composed:
        return sql.SQL(template).format(
            table=sql.Identifier(props["table"]),
            columns=sql.SQL(", ").join(sql.Identifier(c) for c in props["columns"]),
            conditions=sql.SQL(" AND ").join(
                sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder()) for c in props["columns"]),
            values=sql.SQL(", ").join(sql.Placeholder() for _ in props["columns"]))

    def _missing(self, cur: psycopg.Cursor, props: dict) -> list[list]:
        find = self._statement(props, "SELECT 1 FROM {table} WHERE {conditions}")
        return [row for row in props["rows"] if cur.execute(find, row).fetchone() is None]

    def create(self, props: dict) -> CreateResult:
        with connect(props["connection"]) as conn, conn.cursor() as cur, conn.transaction():
            missing = self._missing(cur, props)
            if missing:
                cur.executemany(self._statement(props, "INSERT INTO {table} ({columns}) VALUES ({values})"), missing)
        return CreateResult(f"{props['table']}-sample-rows", dict(props))

    def read(self, id_: str, props: dict) -> ReadResult:
        # Rows deleted by hand make the resource gone, so that the next `up` puts them back.
        with connect(props["connection"]) as conn, conn.cursor() as cur:
            if not _table_exists(cur, props["table"]) or self._missing(cur, props):
                return gone()
        return ReadResult(id_, dict(props))

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        replaces = _replaced(olds, news, ("table", "columns", "rows"))
        changes = replaces or _updated(olds, news, ("keep_on_destroy",))
        return DiffResult(changes=bool(changes), replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        return UpdateResult(dict(news))


class PgSampleRows(Resource, module="postgresql", name="SampleRows"):
    """The rows that `table` must hold: the missing ones are inserted. Deleting
    it leaves the rows in place."""

    def __init__(self, resource_name: str, *, table: Input[str], columns: Sequence[str],
                 rows: Sequence[Sequence[Any]], keep_on_destroy: bool, connection: Input[dict],
                 opts: Optional[ResourceOptions] = None):
        super().__init__(_SampleRowsProvider(), resource_name, {
            "table": table, "columns": list(columns), "rows": [list(r) for r in rows],
            "keep_on_destroy": keep_on_destroy, "connection": connection,
        }, opts)
