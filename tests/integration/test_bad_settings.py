"""Mistakes a careless new user makes, tried on a deployed stack with an
application holding a lease (issue 12): each is refused or converges, and
nothing is lost: rows, roles outside the stack, the mount, outstanding leases."""

from __future__ import annotations

import os
import re
import subprocess
import time

import hvac
import hvac.exceptions
import psycopg
import pytest
import requests
from psycopg import sql
from pulumi import automation as auto

from components.vault_connections import rotated_login
from program_copy import copy_program
from smoke_check import run_smoke_check
from sourced_env import TEST_SECRETS_PROVIDER, file_backend
from stacks import DEPLOYER, REPO, ProgramStack, admin_connect, vault

WEEKLY = "weekly_metrics_reporting"


def lease_of(stack: ProgramStack) -> dict:
    return vault().secrets.database.generate_credentials(stack.role_name, mount_point=stack.mount)


def lease_alive(stack: ProgramStack, secret: dict) -> bool:
    """The lease is still known to Vault and its user can still log in."""
    try:
        vault().sys.read_lease(secret["lease_id"])
        psycopg.connect(
            host="127.0.0.1",
            port=int(os.environ["PGPORT"]),
            dbname=stack.database,
            user=secret["data"]["username"],
            password=secret["data"]["password"],
        ).close()
        return True
    except Exception:
        return False


def refused(stack: ProgramStack, text: str) -> None:
    for operation in (stack.stack.preview, stack.stack.up):
        with pytest.raises(auto.CommandError) as failure:
            operation()
        assert text in str(failure.value), str(failure.value)[-3000:]


def test_class1_a_mount_path_holding_another_engine_is_refused_and_nothing_moves(deployed_stack: ProgramStack):
    secret = lease_of(deployed_stack)
    other = f"kv-{deployed_stack.suffix}"
    vault().sys.enable_secrets_engine("kv", path=other)
    try:
        deployed_stack.set(vaultMountPath=other)
        refused(deployed_stack, f"Vault already has a 'kv' secrets engine at '{other}'")
        deployed_stack.set(vaultMountPath="sys")
        refused(deployed_stack, "pgcreds:vaultMountPath")
    finally:
        deployed_stack.set(vaultMountPath=deployed_stack.mount)
        vault().sys.disable_secrets_engine(other)
    assert lease_alive(deployed_stack, secret)
    mounts = vault().sys.list_mounted_secrets_engines()["data"]
    assert mounts[f"{deployed_stack.mount}/"]["type"] == "database"
    vault().sys.revoke_lease(secret["lease_id"])
    # The refused `up` may have recorded the claim on the new path's login name (a
    # record in the state only: no server was touched); the next `up` drops it.
    settled = deployed_stack.stack.up()
    dropped = [line for line in settled.stdout.splitlines() if " deleted (" in line and "-claim " not in line]
    assert set(settled.summary.resource_changes) <= {"same", "delete"} and not dropped, settled.stdout[-2000:]


def test_class1_a_new_mount_path_never_removes_the_engine_before_the_new_one_works(new_stack: ProgramStack):
    new_stack.stack.up()
    secret = lease_of(new_stack)
    moved = f"{new_stack.mount}-moved"
    new_stack.set(vaultMountPath=moved)
    try:
        output = new_stack.stack.up().stdout
        # The new engine exists (with its connection and role) before the old one goes.
        made = output.index("vault-database-secrets-mount created replacement")
        removed = output.index("vault-database-secrets-mount deleted original")
        role_made = output.index(f"vault-database-secrets-role-{new_stack.role_name} created replacement")
        assert made < role_made < removed, output
        mounts = vault().sys.list_mounted_secrets_engines()["data"]
        assert mounts[f"{moved}/"]["type"] == "database" and f"{new_stack.mount}/" not in mounts
        # The old engine's credential was revoked through Vault, so its user is gone too;
        # applications read from the new path.
        assert not lease_alive(new_stack, secret)
        with admin_connect(new_stack.database) as admin:
            assert (
                admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (secret["data"]["username"],)).fetchall()
                == []
            )
        report = run_smoke_check(
            new_stack.outputs(),
            new_stack.role_name,
            WEEKLY,
            "employee_salary",
            expect_sample_rows=True,
            vault_token=os.environ["VAULT_TOKEN"],
            admin_password=None,
        )
        assert report.passed, report.table()
        assert set(new_stack.stack.up(refresh=True).summary.resource_changes) == {"same"}
        new_stack.stack.destroy()
    finally:
        if f"{moved}/" in vault().sys.list_mounted_secrets_engines()["data"]:
            vault().sys.disable_secrets_engine(moved)


def test_class2_a_role_this_stack_did_not_create_is_refused_at_preview(deployed_stack: ProgramStack):
    alice = f"alice_{deployed_stack.suffix}"
    # With rotate-root, vaultAdminRole: alice means the login alice_<digest>; another team has that one too.
    alice_login = rotated_login(alice, deployed_stack.mount, "postgresql")
    with admin_connect(deployed_stack.database) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'alice-own-password'").format(sql.Identifier(alice)))
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(alice_login)))
        admin.execute(sql.SQL("CREATE TABLE alice_notes (note text)"))
        admin.execute(sql.SQL("ALTER TABLE alice_notes OWNER TO {}").format(sql.Identifier(alice)))
        admin.execute("INSERT INTO alice_notes VALUES ('mine')")
    try:
        for key, value, taken in (
            ("roles", deployed_stack.roles_config(name=alice.replace("_", "-")), alice),
            ("vaultAdminRole", alice, alice_login),
            ("tableOwnerRole", alice, alice),
        ):
            before = deployed_stack.stack.get_all_config().get(f"pgcreds:{key}")
            deployed_stack.set(**{key: value})
            try:
                refused(deployed_stack, f"PostgreSQL already has a role '{taken}' that this stack did not create")
            finally:
                deployed_stack.stack.set_config(
                    f"pgcreds:{key}", before
                ) if before else deployed_stack.stack.remove_config(f"pgcreds:{key}")
        # alice is untouched: she logs in with her own password and still owns her table.
        with psycopg.connect(
            host="127.0.0.1",
            port=int(os.environ["PGPORT"]),
            dbname=deployed_stack.database,
            user=alice,
            password="alice-own-password",
        ) as session:
            assert session.execute("SELECT note FROM alice_notes").fetchall() == [("mine",)]
        with admin_connect(deployed_stack.database) as admin:
            assert admin.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'alice_notes'").fetchone() == (
                alice,
            )
        after = deployed_stack.stack.up()
        assert set(after.summary.resource_changes) == {"same"}, [
            line for line in after.stdout.splitlines() if "delet" in line or "creat" in line or "updat" in line
        ]
    finally:
        with admin_connect(deployed_stack.database) as admin:
            admin.execute("DROP TABLE IF EXISTS alice_notes")
            for role in (alice, alice_login):
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_class4_destroy_keeps_tables_the_current_settings_keep(new_stack: ProgramStack):
    new_stack.stack.up()  # applied with keepTablesOnDestroy false
    with admin_connect(new_stack.database) as admin:
        admin.execute(
            f"INSERT INTO {WEEKLY} (week_ending, product_downloads, github_stars, twitter_followers) "
            "VALUES ('2024-01-05', 1, 2, 3)"
        )
    new_stack.set(keepTablesOnDestroy="true")  # changed, never applied
    new_stack.stack.destroy(run_program=True)  # what `make destroy` runs
    with admin_connect(new_stack.database) as admin:
        weeks = admin.execute(f"SELECT week_ending::date::text FROM {WEEKLY}").fetchall()
        salaries = admin.execute("SELECT count(*) FROM employee_salary").fetchone()[0]
    assert ("2024-01-05",) in weeks and salaries > 0


def test_class5_sample_rows_converge(new_stack: ProgramStack):
    new_stack.set(sampleData="false")
    new_stack.stack.up()
    with admin_connect(new_stack.database) as admin:
        admin.execute(
            f"INSERT INTO {WEEKLY} (week_ending, product_downloads, github_stars, twitter_followers) "
            "VALUES ('2024-01-05', 1, 2, 3)"
        )
    new_stack.set(sampleData="true")
    new_stack.stack.up()
    assert new_stack.smoke_check().passed
    rows_urn = next(
        r["urn"]
        for r in new_stack.stack.export_stack().deployment["resources"]
        if r["urn"].endswith(f"app-schema-{WEEKLY}-sample-rows")
    )
    new_stack.stack.up(replace=[rows_urn])
    with admin_connect(new_stack.database) as admin:
        assert admin.execute(f"SELECT count(*) FROM {WEEKLY}").fetchone()[0] == 4  # 3 sample rows + ours
    report = new_stack.smoke_check()
    assert report.passed, report.table()


def test_class5_another_live_vault_is_refused_clearly(deployed_stack: ProgramStack):
    """Same Vault by another address: an update (tested in test_lifecycle). Another
    Vault: refused at preview, naming the setting; nothing changes in either."""
    secret = lease_of(deployed_stack)
    port, token = "58299", "second-vault-token"
    server = subprocess.Popen(
        [str(REPO / "venv" / "bin" / "bao"), "server", "-dev", f"-dev-listen-address=127.0.0.1:{port}"],
        env={**os.environ, "BAO_DEV_ROOT_TOKEN_ID": token},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workspace = deployed_stack.stack.workspace
    try:
        second = hvac.Client(url=f"http://127.0.0.1:{port}", token=token)
        for _ in range(100):
            try:
                if second.sys.is_initialized():
                    break
            except requests.exceptions.ConnectionError:
                time.sleep(0.1)
        # The stack's secrets stay with the first Vault's transit key: its token goes to the
        # secrets provider by the name it reads first (VAULT_SERVER_TOKEN).
        workspace.env_vars.update(VAULT_TOKEN=token, VAULT_SERVER_TOKEN=os.environ["VAULT_TOKEN"])
        deployed_stack.set(vaultAddress=f"http://127.0.0.1:{port}")
        refused(deployed_stack, "pgcreds:vaultAddress")
        assert f"{deployed_stack.mount}/" not in second.sys.list_mounted_secrets_engines()["data"]
    finally:
        server.terminate()
        server.wait(timeout=10)
        workspace.env_vars.update(VAULT_TOKEN=os.environ["VAULT_TOKEN"])
        workspace.env_vars.pop("VAULT_SERVER_TOKEN", None)
        deployed_stack.set(vaultAddress=os.environ["VAULT_ADDR"])
    assert lease_alive(deployed_stack, secret)
    # The refused `up` had already recorded the provider's new address; it goes back, nothing else moves.
    changes = deployed_stack.stack.up().summary.resource_changes
    assert set(changes) <= {"same", "update"} and changes.get("update", 0) <= 2, changes
    vault().sys.revoke_lease(secret["lease_id"])


def test_class6_a_smoke_check_that_fails_part_way_leaves_nothing(deployed_stack: ProgramStack):
    report = run_smoke_check(
        deployed_stack.outputs(),
        deployed_stack.role_name,
        "no_such_table",
        "employee_salary",
        expect_sample_rows=True,
        vault_token=os.environ["VAULT_TOKEN"],
        admin_password=None,
    )
    assert not report.passed and report.username
    with admin_connect(deployed_stack.database) as admin:
        assert admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (report.username,)).fetchall() == []
    with pytest.raises(hvac.exceptions.InvalidRequest):  # "invalid lease": revoked
        vault().sys.read_lease(report.lease_id)


def test_class6_bao_is_on_path_after_dev_env():
    found = subprocess.run(
        ["bash", "-c", ". local/dev-env.sh >/dev/null 2>&1 && command -v bao"], cwd=REPO, capture_output=True, text=True
    )
    assert found.returncode == 0 and found.stdout.strip().endswith("/bao"), found


def test_a_plain_psql_after_dev_env_asks_for_no_password():
    """Issue 19, class 6: the deploy session's pgpass file serves psql too (-w: never prompt)."""
    script = (
        '. local/dev-env.sh >/dev/null 2>&1 && test -z "${PGPASSWORD:-}" && '
        "psql -w -At -c \"SELECT current_user || ' ' || current_database()\" && "
        'psql -w -At "$PULUMI_BACKEND_URL" -c "SELECT current_user || \' \' || current_database()"'
    )
    done = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    program, state_login = done.stdout.split("\n")[:2]
    assert program == f"{DEPLOYER} postgres"
    assert state_login.startswith("v-") and state_login.endswith(" pulumi_state")


def test_the_dev_stack_follows_the_local_servers_ports(tmp_path):
    """Issue 19, class 6: Pulumi.dev.yaml names no port; the dev stack uses PGPORT and VAULT_ADDR."""
    project = copy_program(tmp_path / "project", stack_files=("Pulumi.dev.yaml",))
    assert "55432" not in (project / "Pulumi.dev.yaml").read_text()
    env = {**os.environ, **file_backend(tmp_path / "state"), "PGPORT": "1"}
    subprocess.run(
        ["pulumi", "stack", "init", "dev", "--secrets-provider", TEST_SECRETS_PROVIDER],
        cwd=project,
        env=env,
        check=True,
        capture_output=True,
    )
    preview = subprocess.run(
        ["pulumi", "preview", "--stack", "dev", "--non-interactive"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # The preflight reached Vault at VAULT_ADDR (no complaint about it) and PostgreSQL
    # at PGPORT, where nothing answers: refused, naming that port, before anything.
    output = preview.stdout + preview.stderr
    assert preview.returncode != 0 and "PostgreSQL at 127.0.0.1:1 (database 'postgres') does not answer" in output
    assert "vaultAddress" not in output, output[-3000:]


def test_a_trailing_newline_in_a_name_is_refused_before_anything_is_made(deployed_stack: ProgramStack):
    """Issue 19, class 2: `$` let "metrics-nl\\n" through; `up` made a role with a newline
    in its name and the CLI then panicked on the URN, leaving the stack locked."""
    secret = lease_of(deployed_stack)
    try:
        deployed_stack.set(roles=deployed_stack.roles_config(name=f"{deployed_stack.role_name}\n"))
        refused(deployed_stack, "pgcreds:roles[0].name")
        deployed_stack.set(roles=deployed_stack.roles_config(), tableOwnerRole=f"it_{deployed_stack.suffix}_owner\t")
        refused(deployed_stack, "pgcreds:tableOwnerRole")
    finally:
        deployed_stack.set(roles=deployed_stack.roles_config(), tableOwnerRole=f"it_{deployed_stack.suffix}_owner")
    with admin_connect() as admin:
        assert admin.execute("SELECT rolname FROM pg_roles WHERE rolname ~ '[[:cntrl:]]'").fetchall() == []
    assert lease_alive(deployed_stack, secret)
    assert set(deployed_stack.stack.up().summary.resource_changes) == {"same"}
    vault().sys.revoke_lease(secret["lease_id"])


def test_the_smoke_check_follows_the_stack_roles_each_by_its_access(new_stack: ProgramStack):
    """Issue 19, class 6: after a rename and a switch to `access: read`, `make up`'s
    smoke check checked `metrics-readwrite` (KeyError) and always tried an INSERT."""
    renamed, reader = f"w{new_stack.suffix}-writer", f"r{new_stack.suffix}-reader"
    new_stack.set(
        roles=[new_stack.roles_config(name=renamed)[0], new_stack.roles_config(name=reader, access="read")[0]]
    )
    new_stack.stack.up()
    verify = subprocess.run(
        ["make", "--no-print-directory", "verify", f"STACK={new_stack.stack.name}", f"PROJECT={new_stack.project_dir}"],
        cwd=REPO,
        env={**os.environ, **new_stack.stack.workspace.env_vars},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-3000:]
    report = verify.stdout
    assert f"role {renamed} (readwrite)" in report and f"role {reader} (read)" in report, report
    sections = {part.split()[0]: part for part in ("\n" + report).split("\nrole ") if part.strip()}
    assert re.search(r"INSERT weekly_metrics_reporting\s+PASS", sections[renamed]), sections[renamed]
    assert re.search(r"INSERT weekly_metrics_reporting denied\s+PASS.*permission denied", sections[reader]), sections[
        reader
    ]
    assert report.count("PASS") >= 12 and "FAIL" not in report and "smoke check: PASSED" in report
