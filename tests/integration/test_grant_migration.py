"""Grants per role replace grants per table (issue 20) without a moment in which a
live credential misses a privilege it keeps.

A stack made by the last version that granted per table (one grant per table and
one per table's sequences) is upgraded in place while an application's session
queries both of its tables without pause. The first `up` of the new version
makes one grant per role and kind of object (its revoke and grant in one
transaction) and declares the old grants once more, retained; the second forgets
them without a REVOKE. A delete of the old grants would have revoked the very
privileges the new ones hold (the provider's delete is `REVOKE ALL ON TABLE`)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
from psycopg import sql

from program_copy import add_tables, checkout, replace_program
from stacks import ProgramStack, cleanup, make_stack, vault

# The last version that granted per table.
PER_TABLE_REVISION = "298b4a2"
TABLES = ("weekly_metrics_reporting", "extra_items")


def grant_names(stack: ProgramStack) -> set[str]:
    return {
        r["urn"].split("::")[-1]
        for r in stack.stack.export_stack().deployment["resources"]
        if r["type"] == "postgresql:index/grant:Grant"
    }


class Queries(threading.Thread):
    """One application session reading and writing both tables until stopped."""

    def __init__(self, conn: psycopg.Connection):
        super().__init__(daemon=True)
        self.conn, self.stopping = conn, threading.Event()
        self.done, self.failures = 0, []

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                for table in TABLES:
                    self.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
                self.conn.execute("INSERT INTO extra_items (value) VALUES (1)")  # the sequence too
                self.done += 1
            except psycopg.Error as error:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {type(error).__name__}: {error}".strip())
            time.sleep(0.005)


def test_an_upgraded_stack_keeps_every_privilege_while_its_grants_are_merged(tmp_path: Path):
    stack = make_stack(tmp_path, source=checkout(PER_TABLE_REVISION, tmp_path / "per-table-version"))
    try:
        add_tables(stack.project_dir, ["extra_items"])
        stack.set(roles=stack.roles_config(tables=list(TABLES)))
        stack.stack.up()
        group = stack.role_name.replace("-", "_")
        per_table = {f"access-roles-{group}-{t}" for t in TABLES} | {
            f"access-roles-{group}-{t}-sequences" for t in TABLES
        }
        assert per_table <= grant_names(stack)

        secret = vault().secrets.database.generate_credentials(stack.role_name, mount_point=stack.mount)
        conn = psycopg.connect(
            host="127.0.0.1",
            port=stack.server.port,
            dbname=stack.database,
            autocommit=True,
            user=secret["data"]["username"],
            password=secret["data"]["password"],
        )
        queries = Queries(conn)
        queries.start()
        try:
            replace_program(stack.project_dir)
            stack.stack.up()  # the grants per role made; the per-table ones retained
            names = grant_names(stack)
            assert {f"access-roles-{group}-on-tables", f"access-roles-{group}-on-sequences"} <= names
            assert per_table <= names
            stack.stack.up()  # the per-table ones forgotten, without a REVOKE
            assert grant_names(stack) == {f"access-roles-{group}-on-tables", f"access-roles-{group}-on-sequences"}
            time.sleep(1)
        finally:
            queries.stopping.set()
            queries.join()
        assert not queries.failures, queries.failures[:5]
        assert queries.done > 50, f"only {queries.done} rounds of queries ran"

        with stack.server.connect(stack.database) as superuser:
            for table in TABLES:
                for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
                    assert superuser.execute(
                        "SELECT has_table_privilege(%s, %s, %s)", (group, table, privilege)
                    ).fetchone()[0], (table, privilege)
        # Nothing left to change, and the catalog is what the state says.
        changes = stack.stack.preview(refresh=True, expect_no_changes=True).change_summary
        assert set(changes) == {"same"}, changes
        conn.close()

        # From now on a role's tables change in place: dropping one from the role
        # leaves the other untouched, and the privilege audit takes the dropped one back.
        stack.set(roles=stack.roles_config(tables=["weekly_metrics_reporting"]))
        stack.stack.up()
        with stack.server.connect(stack.database) as superuser:
            held = {
                t: superuser.execute("SELECT has_table_privilege(%s, %s, 'SELECT')", (group, t)).fetchone()[0]
                for t in TABLES
            }
        assert held == {"weekly_metrics_reporting": True, "extra_items": False}
    finally:
        cleanup(stack)
