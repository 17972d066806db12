"""Issue 19, class 1: privileges granted by hand, outside the settings, are found
at preview (the diff lists them, the policy pack fails), revoked by `up`, and
reported by `make drift` with orphan logins and the refresh; nothing outside the
stack is touched."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import hvac.exceptions
import psycopg
import pytest
from psycopg import sql
from pulumi import automation as auto

from stacks import REPO, ProgramStack, admin_connect, vault

POLICY_PACK = str(REPO / "policy")
SALARIES = "employee_salary"


def credential(stack: ProgramStack) -> dict:
    return vault().secrets.database.generate_credentials(stack.role_name, mount_point=stack.mount)


def connect_as(stack: ProgramStack, secret: dict) -> psycopg.Connection:
    return psycopg.connect(
        host="127.0.0.1",
        port=int(os.environ["PGPORT"]),
        dbname=stack.database,
        user=secret["data"]["username"],
        password=secret["data"]["password"],
        autocommit=True,
    )


def reads_salaries(stack: ProgramStack) -> bool:
    secret = credential(stack)
    try:
        with connect_as(stack, secret) as session:
            session.execute(f"SELECT count(*) FROM {SALARIES}")
            return True
    except psycopg.errors.InsufficientPrivilege:
        return False
    finally:
        vault().sys.revoke_lease(secret["lease_id"])


def pack_preview(stack: ProgramStack, tmp_path: Path) -> auto.PreviewResult:
    """The pull request's preview: the policy pack, with the test stack counted as
    dev (its servers run without TLS, which the pack allows on dev only)."""
    config = tmp_path / "policy-config.json"
    config.write_text(json.dumps({"no-sslmode-disable-outside-dev": {"devStacks": [stack.stack.name]}}))
    return stack.stack.preview(policy_packs=[POLICY_PACK], policy_pack_configs=[str(config)])


def drift(stack: ProgramStack) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", "drift", f"STACK={stack.stack.name}", f"PROJECT={stack.project_dir}"],
        cwd=REPO,
        env={**os.environ, **stack.stack.workspace.env_vars},
        capture_output=True,
        text=True,
        timeout=600,
    )


def hand_grants(stack: ProgramStack, group: str, bystander: str, outsider: str) -> None:
    """What an admin does by hand, as the superuser: the issue's grant, and one of each other kind."""
    with admin_connect(stack.database) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(bystander)))
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(outsider)))
        for statement in (
            "GRANT SELECT ON employee_salary TO {group}",
            "GRANT TRUNCATE ON weekly_metrics_reporting TO {group}",
            "GRANT UPDATE (salary) ON employee_salary TO {group}",
            "GRANT CREATE ON SCHEMA public TO {group}",
            "GRANT TEMPORARY ON DATABASE {database} TO {group}",
            "GRANT pg_read_all_data TO {group}",
            "GRANT {group} TO {outsider}",
            "ALTER ROLE {group} CREATEDB",
            "GRANT SELECT ON employee_salary TO PUBLIC",
            # Outside the stack: a role of someone else's, with the same grant; it stays.
            "GRANT SELECT ON employee_salary TO {bystander}",
        ):
            admin.execute(
                sql.SQL(statement).format(
                    group=sql.Identifier(group),
                    outsider=sql.Identifier(outsider),
                    bystander=sql.Identifier(bystander),
                    database=sql.Identifier(stack.database),
                )
            )


EXPECTED = (
    "SELECT on table public.employee_salary",
    "TRUNCATE on table public.weekly_metrics_reporting",
    "UPDATE on column public.employee_salary.salary",
    "CREATE on schema public",
    "TEMPORARY on database",
    "member of pg_read_all_data",
    "role attribute CREATEDB",
    "PUBLIC: SELECT on table public.employee_salary",
)


def test_hand_made_grants_are_listed_at_preview_revoked_by_up_and_reported_by_drift(
    new_stack: ProgramStack, tmp_path: Path
):
    new_stack.stack.up()
    group = new_stack.role_name.replace("-", "_")
    bystander, outsider = f"bystander_{new_stack.suffix}", f"outsider_{new_stack.suffix}"
    held = credential(new_stack)  # an application holding a lease, with an open session
    session = connect_as(new_stack, held)
    try:
        assert not reads_salaries(new_stack)
        hand_grants(new_stack, group, bystander, outsider)
        assert reads_salaries(new_stack)  # the hole the issue found

        # The preview lists every one, as a change of the privilege audit's `undeclared`.
        preview = new_stack.stack.preview(diff=True)
        for text in EXPECTED + (f"{outsider}: member of {group}",):
            assert text in preview.stdout, (text, preview.stdout[-4000:])
        assert preview.change_summary.get("update") == 1, preview.change_summary
        # The pull request's preview, with the policy pack, fails on them.
        with pytest.raises(auto.CommandError) as refused:
            pack_preview(new_stack, tmp_path)
        assert "no-undeclared-privileges" in str(refused.value) and "employee_salary" in str(refused.value)
        assert "no-sslmode-disable-outside-dev" not in str(refused.value)

        report = drift(new_stack)
        assert report.returncode != 0 and "drift: FOUND" in report.stdout, report.stdout + report.stderr
        assert "1. privileges beyond the settings: 9" in report.stdout, report.stdout
        assert f'REVOKE SELECT ON TABLE public.employee_salary FROM "{group}";' in report.stdout
        print("\n`make drift` after the hand-made grants:\n" + report.stdout)

        up = new_stack.stack.up()
        assert up.summary.resource_changes.get("update") == 1, up.summary.resource_changes
        assert not reads_salaries(new_stack)
        # The application's lease and session kept what the settings give it.
        assert session.execute("SELECT count(*) FROM weekly_metrics_reporting").fetchone()[0] == 3
        with admin_connect(new_stack.database) as admin:

            def has(role: str, privilege: str) -> bool:
                return admin.execute(
                    "SELECT has_table_privilege(%s, 'employee_salary', %s)", (role, privilege)
                ).fetchone()[0]

            assert not has(group, "SELECT") and not has(group, "UPDATE")
            assert has(bystander, "SELECT")  # not the stack's: untouched
            assert admin.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", (outsider, group)).fetchone()[0] is False
            assert admin.execute("SELECT rolcreatedb FROM pg_roles WHERE rolname = %s", (group,)).fetchone()[0] is False
            assert admin.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (outsider,)).fetchone()[0] == 1
        assert set(pack_preview(new_stack, tmp_path).change_summary) == {"same"}
        clean = drift(new_stack)
        assert clean.returncode == 0 and "drift: none" in clean.stdout, clean.stdout + clean.stderr

        # A change of the settings that takes a privilege away is not "undeclared" in
        # its preview (the stack's own grant takes it back), so the pack passes.
        new_stack.set(roles=new_stack.roles_config(access="read"))
        assert pack_preview(new_stack, tmp_path).change_summary.get("update", 0) >= 1
        new_stack.stack.up()
        assert set(new_stack.stack.preview().change_summary) == {"same"}
    finally:
        session.close()
        vault().sys.revoke_lease(held["lease_id"])
        with admin_connect(new_stack.database) as admin:
            admin.execute(f"REVOKE SELECT ON {SALARIES} FROM PUBLIC")
            for role in (bystander, outsider):
                admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role))) if admin.execute(
                    "SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)
                ).fetchone() else None
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_what_the_admin_may_not_revoke_stops_up_with_the_statement_a_superuser_runs(new_stack: ProgramStack):
    new_stack.stack.up()
    group = new_stack.role_name.replace("-", "_")
    with admin_connect(new_stack.database) as admin:
        # now() belongs to the bootstrap superuser: the deployer cannot take this back.
        admin.execute(sql.SQL("GRANT EXECUTE ON FUNCTION pg_catalog.now() TO {}").format(sql.Identifier(group)))
    with pytest.raises(auto.CommandError) as stopped:
        new_stack.stack.up()
    message = str(stopped.value)
    statement = f'REVOKE EXECUTE ON ROUTINE now() FROM "{group}"'
    assert "may not take back" in message and statement in message, message[-3000:]
    with admin_connect(new_stack.database) as admin:
        admin.execute(statement)
    assert new_stack.stack.up().summary.result == "succeeded"
    assert set(new_stack.stack.preview().change_summary) == {"same"}


def test_a_login_left_by_a_failed_revocation_is_reported_as_an_orphan(new_stack: ProgramStack):
    new_stack.stack.up()
    kept = credential(new_stack)
    time.sleep(1.5)  # another second, so another VALID UNTIL: the report can name which user is the orphan
    stuck = credential(new_stack)
    user = stuck["data"]["username"]
    blocker = f"blocker_{new_stack.suffix}"
    with admin_connect() as admin:
        # It owns something in another database, which the revocation's DROP OWNED
        # (run in the stack's database) does not reach: DROP ROLE fails.
        admin.execute(sql.SQL("CREATE TABLE {} ()").format(sql.Identifier(blocker)))
        admin.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(blocker), sql.Identifier(user)))
    try:
        with pytest.raises(hvac.exceptions.VaultError):
            vault().sys.revoke_lease(stuck["lease_id"])
        # What an operator then does: force, which forgets the lease whatever the error.
        vault().sys.revoke_force(stuck["lease_id"])
        report = drift(new_stack)
        assert report.returncode != 0 and "drift: FOUND" in report.stdout, report.stdout + report.stderr
        assert "2. orphan logins (no live lease): 1" in report.stdout, report.stdout
        assert user in report.stdout and kept["data"]["username"] not in report.stdout
        print("\n`make drift` after a failed revocation and `bao lease revoke -force`:\n" + report.stdout)
    finally:
        vault().sys.revoke_lease(kept["lease_id"])
        with admin_connect() as admin:
            admin.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(blocker)))
        with admin_connect(new_stack.database) as admin:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(user)))
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(user)))
