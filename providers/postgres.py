"""Dynamic resources for PostgreSQL roles, memberships, tables, grants and rows.

Every resource takes a `connection` input (see `components.pg_endpoint`) in
place of an explicit provider; its password is a secret input, so it stays
encrypted in the state. Identifiers are always composed with psycopg's
`sql.Identifier`, values with `sql.Literal` or query parameters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import psycopg
from psycopg import sql
from pulumi import Input, Output, ResourceOptions
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from providers._shared import changed, gone

CONNECT_TIMEOUT_SECONDS = 10


class PostgresUnreachable(Exception):
    """PostgreSQL could not be reached or refused the login."""


def _ca_file(pem: str) -> str:
    """libpq reads CA certificates from files: keep each PEM in a private temporary file."""
    folder = Path(tempfile.gettempdir()) / f"pgcreds-ca-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / (hashlib.sha256(pem.encode()).hexdigest()[:16] + ".pem")
    if not path.exists():
        path.write_text(pem)
    return str(path)


def connect(connection: dict[str, Any]) -> psycopg.Connection:
    """Opens an autocommit connection from a `connection` input. The server's CA
    comes as a file path (`sslrootcert`) or as PEM text (`sslrootcert_pem`)."""
    sslrootcert = connection.get("sslrootcert") or None
    if connection.get("sslrootcert_pem"):
        sslrootcert = _ca_file(connection["sslrootcert_pem"])
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
        )
    except psycopg.OperationalError as error:
        # `from None`: the message carries psycopg's text; the chained traceback is noise.
        raise PostgresUnreachable(
            f"cannot connect to PostgreSQL at {connection['host']}:{int(connection['port'])} "
            f"(database {connection['database']!r}, user {connection['user']!r}): {str(error).strip()}. "
            "Check that the server is running and the pgcreds:postgres* settings; "
            "a later `pulumi up` picks up where this one stopped."
        ) from None


def scram_sha_256_verifier(password: str, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores, so the clear password is
    never sent in a statement (statements can end up in server logs)."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"



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


def _role_exists(cur: psycopg.Cursor, name: str) -> bool:
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
    return cur.fetchone() is not None


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


# --- roles --------------------------------------------------------------------


class _RoleProvider(ResourceProvider):
    """A PostgreSQL role. `password` is optional (group roles have none)."""

    REPLACE_ON = ("name",)
    UPDATE_ON = ("login", "create_role", "password")

    def _attributes(self, props: dict) -> sql.Composable:
        parts = [sql.SQL("LOGIN" if props.get("login") else "NOLOGIN"),
                 sql.SQL("CREATEROLE" if props.get("create_role") else "NOCREATEROLE")]
        if props.get("password"):
            parts.append(sql.SQL("PASSWORD {}").format(sql.Literal(scram_sha_256_verifier(props["password"]))))
        elif not props.get("login"):
            parts.append(sql.SQL("PASSWORD NULL"))
        return sql.SQL(" ").join(parts)

    def create(self, props: dict) -> CreateResult:
        name = sql.Identifier(props["name"])
        with connect(props["connection"]) as conn, conn.cursor() as cur:
            # Adopting a role left by an interrupted run lets a later `up` converge.
            verb = "ALTER" if _role_exists(cur, props["name"]) else "CREATE"
            cur.execute(sql.SQL(verb + " ROLE {} WITH {}").format(name, self._attributes(props)))
        return CreateResult(props["name"], dict(props))

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        replaces = _replaced(olds, news, self.REPLACE_ON)
        changes = replaces or _updated(olds, news, self.UPDATE_ON)
        return DiffResult(changes=bool(changes), replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        with connect(news["connection"]) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} WITH {}").format(sql.Identifier(news["name"]), self._attributes(news)))
        return UpdateResult(dict(news))

    def read(self, id_: str, props: dict) -> ReadResult:
        with connect(props["connection"]) as conn, conn.cursor() as cur:
            cur.execute("SELECT rolcanlogin, rolcreaterole FROM pg_roles WHERE rolname = %s", (id_,))
            row = cur.fetchone()
        if row is None:
            return gone()
        return ReadResult(id_, {**props, "login": row[0], "create_role": row[1]})

    def delete(self, id_: str, props: dict) -> None:
        name = sql.Identifier(id_)
        with connect(props["connection"]) as conn, conn.cursor() as cur:
            if not _role_exists(cur, id_):
                return
            _ensure_member(cur, id_)
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (id_,))
            # Whatever it still owns (kept tables, objects made by its users) goes to
            # the admin, so that the DROP cannot fail and no data is lost.
            cur.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(name))
            cur.execute(sql.SQL("DROP OWNED BY {}").format(name))
            cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(name))


class PgRole(Resource, module="postgresql", name="Role"):
    """A PostgreSQL role: a NOLOGIN group or owner role, or a LOGIN role."""

    name: Output[str]

    def __init__(self, resource_name: str, *, name: Input[str], connection: Input[dict],
                 login: bool = False, create_role: bool = False,
                 password: Optional[Input[str]] = None, opts: Optional[ResourceOptions] = None):
        super().__init__(_RoleProvider(), resource_name, {
            "name": name, "login": login, "create_role": create_role,
            "password": password, "connection": connection,
        }, opts)


class _MembershipProvider(ResourceProvider):
    """Membership of `member` in `group`, optionally WITH ADMIN OPTION."""

    def _grant(self, props: dict) -> None:
        statement = sql.SQL("GRANT {} TO {}").format(sql.Identifier(props["group"]), sql.Identifier(props["member"]))
        if props.get("admin_option"):
            statement = statement + sql.SQL(" WITH ADMIN OPTION")
        with connect(props["connection"]) as conn:
            conn.execute(statement)

    def create(self, props: dict) -> CreateResult:
        self._grant(props)
        return CreateResult(f"{props['group']}/{props['member']}", dict(props))

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        replaces = _replaced(olds, news, ("group", "member", "admin_option"))
        return DiffResult(changes=bool(replaces or _updated(olds, news, ())), replaces=replaces,
                          delete_before_replace=True)

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        self._grant(news)
        return UpdateResult(dict(news))

    def read(self, id_: str, props: dict) -> ReadResult:
        with connect(props["connection"]) as conn, conn.cursor() as cur:
            cur.execute(
                """SELECT m.admin_option FROM pg_auth_members m
                   JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member
                   WHERE g.rolname = %s AND r.rolname = %s""", (props["group"], props["member"]))
            row = cur.fetchone()
        if row is None:
            return gone()
        return ReadResult(id_, {**props, "admin_option": row[0]})

    def delete(self, _id: str, props: dict) -> None:
        with connect(props["connection"]) as conn, conn.cursor() as cur:
            if _role_exists(cur, props["group"]) and _role_exists(cur, props["member"]):
                cur.execute(sql.SQL("REVOKE {} FROM {}").format(
                    sql.Identifier(props["group"]), sql.Identifier(props["member"])))


class PgRoleMembership(Resource, module="postgresql", name="RoleMembership"):
    """Makes `member` a member of `group` (with ADMIN OPTION when asked)."""

    def __init__(self, resource_name: str, *, group: Input[str], member: Input[str],
                 connection: Input[dict], admin_option: bool = False,
                 opts: Optional[ResourceOptions] = None):
        super().__init__(_MembershipProvider(), resource_name, {
            "group": group, "member": member, "admin_option": admin_option, "connection": connection,
        }, opts)


# --- tables -------------------------------------------------------------------


class _TableProvider(ResourceProvider):
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
        if props.get("keep_on_destroy"):
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


# --- grants -------------------------------------------------------------------

_SEQUENCES_OF_TABLE = """
    SELECT s.relname FROM pg_depend d
    JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
    WHERE d.refobjid = to_regclass(%s) AND d.deptype IN ('a', 'i')
"""


class _TableGrantProvider(ResourceProvider):
    """Privileges of a role on a table and on the sequences its columns use."""

    def _apply(self, props: dict, revoke_first: bool) -> list[str]:
        role, table = sql.Identifier(props["role"]), sql.Identifier(props["table"])
        privileges = sql.SQL(", ").join(sql.SQL(p) for p in props["privileges"])
        with connect(props["connection"]) as conn, conn.cursor() as cur, conn.transaction():
            _take_turns(cur, f"grants on {props['table']}")
            cur.execute(_SEQUENCES_OF_TABLE, (table.as_string(cur),))
            sequences = sorted(r[0] for r in cur.fetchall())
            if revoke_first:
                self._revoke(cur, props, sequences)
            cur.execute(sql.SQL("GRANT {} ON TABLE {} TO {}").format(privileges, table, role))
            # Without USAGE on the serial's sequence an INSERT fails, which is the
            # tutorial's bug; read-only roles need nothing on it.
            if props["sequence_privileges"]:
                for sequence in sequences:
                    cur.execute(sql.SQL("GRANT {} ON SEQUENCE {} TO {}").format(
                        sql.SQL(", ").join(sql.SQL(p) for p in props["sequence_privileges"]),
                        sql.Identifier(sequence), role))
        return sequences

    @staticmethod
    def _revoke(cur: psycopg.Cursor, props: dict, sequences: Sequence[str]) -> None:
        role, table = sql.Identifier(props["role"]), sql.Identifier(props["table"])
        cur.execute(sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(table, role))
        for sequence in sequences:
            cur.execute(sql.SQL("REVOKE ALL ON SEQUENCE {} FROM {}").format(sql.Identifier(sequence), role))

    def create(self, props: dict) -> CreateResult:
        sequences = self._apply(props, revoke_first=False)
        return CreateResult(f"{props['role']}@{props['table']}", {**props, "sequences": sequences})

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        replaces = _replaced(olds, news, ("role", "table"))
        changes = replaces or _updated(olds, news, ("privileges", "sequence_privileges"))
        return DiffResult(changes=bool(changes), replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        return UpdateResult({**news, "sequences": self._apply(news, revoke_first=True)})

    def read(self, id_: str, props: dict) -> ReadResult:
        with connect(props["connection"]) as conn, conn.cursor() as cur:
            if not (_role_exists(cur, props["role"]) and _table_exists(cur, props["table"])):
                return gone()
            table = sql.Identifier(props["table"]).as_string(cur)
            held = [p for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
                    if cur.execute("SELECT has_table_privilege(%s, %s, %s)", (props["role"], table, p)).fetchone()[0]]
        # Report drift (privileges added or removed by hand) so that `up` restores them.
        kept = [p for p in props["privileges"] if p in held]
        return ReadResult(id_, {**props, "privileges": kept if set(held) <= set(props["privileges"]) else held})

    def delete(self, _id: str, props: dict) -> None:
        with connect(props["connection"]) as conn, conn.cursor() as cur, conn.transaction():
            _take_turns(cur, f"grants on {props['table']}")
            if _role_exists(cur, props["role"]) and _table_exists(cur, props["table"]):
                self._revoke(cur, props, props.get("sequences") or [])


class PgTableGrant(Resource, module="postgresql", name="TableGrant"):
    """Grants `privileges` on `table` (and `sequence_privileges` on its sequences) to `role`."""

    sequences: Output[list]

    def __init__(self, resource_name: str, *, role: Input[str], table: Input[str],
                 privileges: Sequence[str], sequence_privileges: Sequence[str],
                 connection: Input[dict], opts: Optional[ResourceOptions] = None):
        super().__init__(_TableGrantProvider(), resource_name, {
            "role": role, "table": table, "privileges": list(privileges),
            "sequence_privileges": list(sequence_privileges), "connection": connection, "sequences": None,
        }, opts)


# --- rows ---------------------------------------------------------------------


class _SampleRowsProvider(ResourceProvider):
    """Sample rows, inserted only into an empty table (never duplicated), and
    deleted again with the resource unless the tables are kept on destroy."""

    def _statement(self, props: dict, template: str) -> sql.Composed:
        return sql.SQL(template).format(
            table=sql.Identifier(props["table"]),
            columns=sql.SQL(", ").join(sql.Identifier(c) for c in props["columns"]),
            conditions=sql.SQL(" AND ").join(
                sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder()) for c in props["columns"]),
            values=sql.SQL(", ").join(sql.Placeholder() for _ in props["columns"]))

    def create(self, props: dict) -> CreateResult:
        with connect(props["connection"]) as conn, conn.cursor() as cur, conn.transaction():
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(props["table"])))
            if cur.fetchone()[0] == 0:
                cur.executemany(self._statement(props, "INSERT INTO {table} ({columns}) VALUES ({values})"),
                                props["rows"])
        return CreateResult(f"{props['table']}-sample-rows", dict(props))

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        replaces = _replaced(olds, news, ("table", "columns", "rows"))
        changes = replaces or _updated(olds, news, ("keep_on_destroy",))
        return DiffResult(changes=bool(changes), replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        return UpdateResult(dict(news))

    def delete(self, _id: str, props: dict) -> None:
        if props.get("keep_on_destroy"):
            return
        with connect(props["connection"]) as conn, conn.cursor() as cur:
            if _table_exists(cur, props["table"]):
                cur.executemany(self._statement(props, "DELETE FROM {table} WHERE {conditions}"), props["rows"])


class PgSampleRows(Resource, module="postgresql", name="SampleRows"):
    """Rows inserted into `table` when it is empty; removed again on delete
    unless `keep_on_destroy`."""

    def __init__(self, resource_name: str, *, table: Input[str], columns: Sequence[str],
                 rows: Sequence[Sequence[Any]], keep_on_destroy: bool, connection: Input[dict],
                 opts: Optional[ResourceOptions] = None):
        super().__init__(_SampleRowsProvider(), resource_name, {
            "table": table, "columns": list(columns), "rows": [list(r) for r in rows],
            "keep_on_destroy": keep_on_destroy, "connection": connection,
        }, opts)
