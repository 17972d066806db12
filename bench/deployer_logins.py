"""Which kind of Vault-issued login can be the program's PostgreSQL admin, on a
given server: a static role (one fixed login whose password Vault rotates) or a
dynamic login (a new login per run, dropped when its lease ends). Prints a table;
asserts nothing.

    python bench/deployer_logins.py --port 55432 --password-file <superuser password file>

Vault runs these statements as its own CREATEROLE login (never a superuser), so
they are run here as such a login: what Vault would do, without Vault. Everything
it makes is dropped at the end.
"""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path

import psycopg
from psycopg import sql


def connect(port: int, user: str, password: str) -> psycopg.Connection:
    return psycopg.connect(
        host="127.0.0.1",
        port=port,
        dbname="postgres",
        user=user,
        password=password,
        autocommit=True,
        connect_timeout=10,
    )


def attempt(conn: psycopg.Connection, statement: sql.Composable) -> str:
    try:
        conn.execute(statement)
        return "ok"
    except psycopg.Error as error:
        return f"fails: {str(error).strip().splitlines()[0]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--password-file", type=Path, required=True)
    args = parser.parse_args()
    suffix = secrets.token_hex(3)
    vault_login, static, app_static, app_dynamic = (
        f"dl_{suffix}_vault",
        f"dl_{suffix}_static",
        f"dl_{suffix}_app_s",
        f"dl_{suffix}_app_d",
    )
    dynamic = [f"v-dl-{suffix}-{n}" for n in (1, 2)]
    password = secrets.token_urlsafe(16)
    ident = sql.Identifier
    superuser = connect(args.port, "postgres", args.password_file.read_text().strip())
    version = superuser.info.server_version
    rows: list[tuple[str, str]] = []
    try:
        superuser.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(ident(vault_login), sql.Literal(password))
        )
        superuser.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(ident(static), sql.Literal(password))
        )
        vault = connect(args.port, vault_login, password)

        # A static role: Vault rotates the fixed login's password.
        rotate = sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(ident(static), sql.Literal(password))
        rows.append(("static: Vault's login rotates the deployer's password", attempt(vault, rotate)))
        if version >= 160000:
            superuser.execute(
                sql.SQL("GRANT {} TO {} WITH ADMIN TRUE, INHERIT FALSE, SET FALSE").format(
                    ident(static), ident(vault_login)
                )
            )
            rows.append(("static: the same, with ADMIN OPTION (no INHERIT, no SET)", attempt(vault, rotate)))
        deployer = connect(args.port, static, password)
        rows.append(
            (
                "static: run 1 creates a group role",
                attempt(deployer, sql.SQL("CREATE ROLE {} NOLOGIN").format(ident(app_static))),
            )
        )
        deployer.close()
        deployer = connect(args.port, static, password)
        rows.append(
            (
                "static: run 2 (same login) alters it",
                attempt(deployer, sql.SQL("ALTER ROLE {} CONNECTION LIMIT 5").format(ident(app_static))),
            )
        )
        rows.append(("static: run 2 drops it", attempt(deployer, sql.SQL("DROP ROLE {}").format(ident(app_static)))))
        deployer.close()

        # A dynamic login per run: made by Vault's login, dropped when its lease ends.
        first = sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {} VALID UNTIL 'infinity'")
        rows.append(
            (
                "dynamic: Vault makes run 1's login (LOGIN CREATEROLE)",
                attempt(vault, first.format(ident(dynamic[0]), sql.Literal(password))),
            )
        )
        run1 = connect(args.port, dynamic[0], password)
        rows.append(
            (
                "dynamic: run 1 creates a group role",
                attempt(run1, sql.SQL("CREATE ROLE {} NOLOGIN").format(ident(app_dynamic))),
            )
        )
        run1.close()
        rows.append(
            (
                "dynamic: run 1's lease ends, its login is dropped",
                attempt(vault, sql.SQL("DROP ROLE {}").format(ident(dynamic[0]))),
            )
        )
        attempt(vault, first.format(ident(dynamic[1]), sql.Literal(password)))
        run2 = connect(args.port, dynamic[1], password)
        rows.append(
            (
                "dynamic: run 2 (another login) alters run 1's group role",
                attempt(run2, sql.SQL("ALTER ROLE {} CONNECTION LIMIT 5").format(ident(app_dynamic))),
            )
        )
        rows.append(("dynamic: run 2 drops it", attempt(run2, sql.SQL("DROP ROLE {}").format(ident(app_dynamic)))))
        run2.close()
        vault.close()
    finally:
        for role in (app_static, app_dynamic, *dynamic, static, vault_login):
            superuser.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident(role)))
        superuser.close()
    print(f"PostgreSQL {version // 10000}.{version % 10000}: the program's admin as a Vault-issued login")
    for what, result in rows:
        print(f"  {what:<60} {result}")


if __name__ == "__main__":
    main()
