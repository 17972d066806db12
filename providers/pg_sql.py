"""PostgreSQL sessions and statements of the dynamic providers (and of the
smoke check), with psycopg.

A module of its own so that psycopg is loaded only by the process that talks
to PostgreSQL: `providers.postgres` loads this lazily, and the program process,
which only declares resources, never does (psycopg takes about 0.1 s to import).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from providers._shared import ca_file

CONNECT_TIMEOUT_SECONDS = 10


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
            password=connection.get("password"),  # None: libpq reads PGPASSFILE
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


def ensure_member(cur: psycopg.Cursor, role: str) -> None:
    """Makes the admin a member of `role`. A superuser is one already; a
    CREATEROLE admin such as Aiven's avnadmin is not, yet needs to be to hand a
    table to the role, end its sessions or reassign what it owns."""
    cur.execute("SELECT pg_has_role(current_user, %s, 'MEMBER')", (role,))
    if not cur.fetchone()[0]:
        cur.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role)))


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
    schema = cur.execute("SELECT current_schema()").fetchone()[0]
    if not cur.execute("SELECT has_schema_privilege(%s, %s, 'CREATE')", (owner, schema)).fetchone()[0]:
        cur.execute(sql.SQL("GRANT CREATE ON SCHEMA {} TO {}").format(sql.Identifier(schema), sql.Identifier(owner)))
    cur.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(table), sql.Identifier(owner)))


def table_exists(cur: psycopg.Cursor, name: str) -> bool:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (sql.Identifier(name).as_string(cur),))
    return bool(cur.fetchone()[0])
