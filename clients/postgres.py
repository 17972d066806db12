"""PostgreSQL sessions for the dynamic providers and the operations scripts, with
psycopg: errors that name the server, and the login as a `connection` dict says
(its password, or none: then libpq reads the deploy session's PGPASSFILE).

Loaded only by the processes that talk to PostgreSQL (psycopg takes about 0.1 s
to import): never by the program process, which only declares resources.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg
from psycopg import sql

from clients.tls import ca_file

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
                "this one stopped."
            ) from None


def search_path_option(connection: dict[str, Any]) -> str | None:
    """An application stack's schema as the session's search_path (its name is an
    application name: lower-case letters and digits, checked by the settings)."""
    schema = connection.get("search_path")
    if not schema:
        return None
    if not schema.isalnum() or not schema.islower():
        raise ValueError(f"not a schema name of the program: {schema!r}")
    return f"-c search_path={schema}"


def login_user(connection: dict[str, Any]) -> str | None:
    """Whom a `connection` logs in as: its `user` (a managed service's admin, whose
    password the connection carries), else the deploy session's login (PGUSER), so
    that the state records no login name and a preview logs in as its own."""
    return connection.get("user") or os.environ.get("PGUSER") or None


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
            user=login_user(connection),
            password=connection.get("password"),  # None: libpq reads PGPASSFILE
            sslmode=connection.get("sslmode") or "prefer",
            sslrootcert=sslrootcert,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            autocommit=True,
            application_name="pg-dynamic-creds",
            options=search_path_option(connection),
            cursor_factory=_NamingCursor,
        )
    except psycopg.OperationalError as error:
        # `from None`: the message carries psycopg's text; the chained traceback is noise.
        raise PostgresUnreachable(
            f"cannot connect to PostgreSQL at {connection['host']}:{int(connection['port'])} "
            f"(database {connection['database']!r}, user {login_user(connection)!r}): {str(error).strip()}. "
            "Check that the server is running and the pgcreds:postgres* settings; "
            "a later `pulumi up` picks up where this one stopped."
        ) from None


def scalar(cur: psycopg.Cursor | psycopg.Connection, query: str, params: tuple = ()) -> Any:
    """The one value a query of one row answers (an aggregate, a function's result)."""
    row = cur.execute(query, params).fetchone()
    if row is None:
        raise LookupError(f"no row for: {query}")
    return row[0]


def ensure_member(cur: psycopg.Cursor | psycopg.Connection, role: str) -> bool:
    """Makes the admin able to act as `role` (SET ROLE, ALTER … OWNER TO it);
    True if it granted itself that now. A superuser can already; a CREATEROLE
    admin such as Aiven's avnadmin must take membership, which it may since it
    holds ADMIN OPTION on the roles it made. From PostgreSQL 16 that automatic
    membership does not include SET (createrole_self_grant is empty by default),
    so the grant asks for it."""
    set_option = cur.connection.info.server_version >= 160000  # a Connection is its own `connection`
    granted = not scalar(cur, "SELECT pg_has_role(current_user, %s, %s)", (role, "SET" if set_option else "MEMBER"))
    if granted:
        cur.execute(
            sql.SQL("GRANT {} TO CURRENT_USER{}").format(
                sql.Identifier(role), sql.SQL(" WITH SET TRUE" if set_option else "")
            )
        )
    # The session worked out its search_path before it could use the role's schema
    # (any earlier query does), and keeps that until the setting is assigned again:
    # otherwise `CREATE TABLE` there fails with "no schema has been selected". Also
    # when the membership is already there: another table's transaction may have
    # granted it after this session's first query (measured: the split bench, two
    # tables of one application at once).
    cur.execute("SELECT set_config('search_path', current_setting('search_path'), false)")
    return granted
