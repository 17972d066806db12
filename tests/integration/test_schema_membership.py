"""A deploy login that takes membership of its application's owner role in the
middle of a session can create in the owner's schema at once. PostgreSQL works
out a session's search_path on its first query and keeps it, so without
`ensure_member`'s reassignment the table lands nowhere ("no schema has been
selected to create in": seen when the table's create ran before any other
resource had made the login a member)."""

from __future__ import annotations

import os
import secrets

import psycopg
from psycopg import sql

from clients.postgres import ensure_member
from stacks import admin_connect


def test_a_membership_taken_mid_session_reaches_the_schema_of_the_role():
    suffix = secrets.token_hex(3)
    login, owner, schema, database = f"l{suffix}", f"o{suffix}", f"s{suffix}", f"db{suffix}"
    password = secrets.token_urlsafe(16)
    with admin_connect() as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(sql.Identifier(login), sql.Literal(password))
        )
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(login)))
    server = dict(host="127.0.0.1", port=int(os.environ["PGPORT"]), dbname=database, user=login, password=password)
    try:
        with psycopg.connect(**server, autocommit=True) as setup:
            setup.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(owner)))
            setup.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(owner)))
            setup.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(*map(sql.Identifier, (schema, owner))))
            setup.execute(sql.SQL("REVOKE {} FROM CURRENT_USER").format(sql.Identifier(owner)))
        with psycopg.connect(**server, autocommit=True, options=f"-c search_path={schema}") as session:
            assert session.execute("SELECT current_schema()").fetchone() == (None,)  # not visible yet
            with session.transaction(), session.cursor() as cur:
                assert ensure_member(cur, owner) is True
                cur.execute("CREATE TABLE made_here (id int)")
                assert cur.execute("SELECT current_schema()").fetchone() == (schema,)
        # The other race: another session (another table's create) grants the membership
        # after this one's first query; ensure_member finds it there and must still
        # reassign the search_path (the split bench hit it, two tables at once).
        with psycopg.connect(**server, autocommit=True) as other:
            other.execute(sql.SQL("REVOKE {} FROM CURRENT_USER").format(sql.Identifier(owner)))
        with psycopg.connect(**server, autocommit=True, options=f"-c search_path={schema}") as session:
            assert session.execute("SELECT current_schema()").fetchone() == (None,)
            with psycopg.connect(**server, autocommit=True) as other:
                other.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(owner)))
            with session.transaction(), session.cursor() as cur:
                assert ensure_member(cur, owner) is False
                cur.execute("CREATE TABLE made_second (id int)")
                assert cur.execute("SELECT current_schema()").fetchone() == (schema,)
    finally:
        with admin_connect() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
            for role in (owner, login):
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
