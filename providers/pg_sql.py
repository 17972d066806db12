"""PostgreSQL statements of the dynamic providers, with psycopg.

A module of its own so that psycopg is loaded only by the process that talks
to PostgreSQL: `providers.postgres` loads this lazily, and the program process,
which only declares resources, never does (psycopg takes about 0.1 s to import).
Sessions are opened by `clients.postgres.connect`.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from clients.postgres import PostgresUnreachable, connect, ensure_member, scalar  # noqa: F401 - the providers' entry points


def take_turns(cur: psycopg.Cursor, topic: str) -> None:
    """Pulumi creates resources in parallel, and concurrent GRANTs that touch the
    same catalog row collide ("tuple concurrently updated", "duplicate key"):
    those on one `topic` take turns, until the transaction ends."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"pgcreds: {topic}",))


def give_table(cur: psycopg.Cursor, table: str, owner: str) -> None:
    """ALTER TABLE ... OWNER TO, as a non-superuser admin may: it must be a
    member of the new owner, and the owner needs CREATE on the schema."""
    take_turns(cur, "table owner grants")
    ensure_member(cur, owner)
    schema = scalar(cur, "SELECT current_schema()")
    if not scalar(cur, "SELECT has_schema_privilege(%s, %s, 'CREATE')", (owner, schema)):
        cur.execute(sql.SQL("GRANT CREATE ON SCHEMA {} TO {}").format(sql.Identifier(schema), sql.Identifier(owner)))
    cur.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(table), sql.Identifier(owner)))


def session_schema(cur: psycopg.Cursor) -> str:
    """The schema the program's tables are in: an application stack's own (the
    session's search_path, see `clients.postgres`), or the first one in the path."""
    schema = scalar(cur, "SELECT current_setting('search_path')")
    if schema.isalnum() and schema.islower():
        return schema
    return scalar(cur, "SELECT coalesce(current_schema(), 'public')")


# By name in the catalog, not by the search_path: a login without USAGE on the
# schema (a preview's) may still read whether a table is there.
TABLE_OID = (
    "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s"
)


def table_owner(cur: psycopg.Cursor, name: str) -> str | None:
    """Who owns the table (None: there is no such table)."""
    found = cur.execute(
        f"SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = ({TABLE_OID})", (session_schema(cur), name)
    ).fetchone()
    return found[0] if found else None


def table_exists(cur: psycopg.Cursor, name: str) -> bool:
    return cur.execute(TABLE_OID, (session_schema(cur), name)).fetchone() is not None


def may_select(cur: psycopg.Cursor, table: str) -> bool:
    """Whether the login may read the table: a preview's login reads no application
    table, only the catalogs and the statistics."""
    found = cur.execute(
        f"SELECT has_table_privilege(oid, 'SELECT') FROM ({TABLE_OID}) t", (session_schema(cur), table)
    ).fetchone()
    return bool(found and found[0])


def row_count(cur: psycopg.Cursor, table: str) -> int:
    """The table's rows: counted where the login may read it, else as the server's
    statistics count them (the deploy, which may read it, counts them exactly)."""
    if may_select(cur, table):
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
    else:
        cur.execute(
            "SELECT coalesce(max(n_live_tup), 0) FROM pg_stat_user_tables WHERE schemaname = %s AND relname = %s",
            (session_schema(cur), table),
        )
    row = cur.fetchone()
    return int(row[0]) if row else 0
