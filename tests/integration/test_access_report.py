"""The access report on a deployed stack (issue 32, item 1): `python -m review.access`
(`make access`, and `--changes` as ci/preview.sh runs it) against the real engine's
outputs, the catalog and Vault. A pull request's five kinds of change in plain
words; after the `up`, declared and real agree; a privilege granted by hand is
marked; an attempt on employee_salary is refused with the program's reason."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from psycopg import sql

from program_copy import add_tables
from stacks import REPO, ProgramStack

# Nothing in it depends on the Vault server: it runs once, in the shorter half of `make test`.
pytestmark = pytest.mark.vault_half


def access(stack: ProgramStack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "review.access", "--stack", stack.stack.name, "--cwd", str(stack.project_dir), *args],
        cwd=REPO,
        env={**os.environ, **stack.stack.workspace.env_vars},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_a_pull_requests_access_changes_then_declared_beside_real(new_stack: ProgramStack):
    s = new_stack.suffix
    writer, reports, audit = f"m{s}-readwrite", f"m{s}-reports", f"m{s}-audit"
    add_tables(new_stack.project_dir, ["invoices", "payments"])
    before = [
        {"name": writer, "tables": ["invoices"], "access": "readwrite", "defaultTtl": "1h", "maxTtl": "24h"},
        {"name": reports, "tables": ["weekly_metrics_reporting"], "access": "readwrite"},
    ]
    new_stack.set(roles=before)
    new_stack.stack.up()
    unchanged = access(new_stack, "--changes")
    assert unchanged.returncode == 0, unchanged.stderr
    assert "This pull request changes no access." in unchanged.stdout.splitlines()

    # A pull request: a table added to a role, a TTL changed, a privilege removed, a role added.
    after = [
        {**before[0], "tables": ["invoices", "payments"], "defaultTtl": "30m"},
        {**before[1], "access": "read"},
        {"name": audit, "tables": ["invoices"], "access": "read", "defaultTtl": "15m", "maxTtl": "1h"},
    ]
    new_stack.set(roles=after)
    changed = access(new_stack, "--changes")
    assert changed.returncode == 0, changed.stderr
    print(f"\nthe pull request's access comment:\n{changed.stdout}")
    assert changed.stdout.splitlines()[:7] == [
        f"#### Access changes on stack `{new_stack.stack.name}`",
        "",
        f"- new role `{audit}`: SELECT on `invoices`; credentials last 15m, at most 1h",
        f"- `{writer}` gains SELECT, INSERT, UPDATE, DELETE on `payments`",
        f"- `{writer}`: credentials last 30m instead of 1h",
        f"- `{reports}` loses INSERT, UPDATE, DELETE on `weekly_metrics_reporting`",
        "- nobody gains `employee_salary`",
    ]

    # Deployed: what a credential can do is what the settings say.
    new_stack.stack.up()
    live = access(new_stack)
    print(f"\nmake access:\n{live.stdout}")
    assert live.returncode == 0, live.stdout + live.stderr
    rows = [line.split() for line in live.stdout.splitlines()]
    assert [
        writer,
        "payments",
        "SELECT,",
        "INSERT,",
        "UPDATE,",
        "DELETE",
        "SELECT,",
        "INSERT,",
        "UPDATE,",
        "DELETE",
    ] in rows
    assert [reports, "weekly_metrics_reporting", "SELECT", "SELECT"] in rows
    assert live.stdout.strip().endswith("access: no difference(s) between declared and real")
    assert f"{audit}: TTL (default / max) declared 15m / 1h, in Vault 15m / 1h; AppRole role {audit} at " in live.stdout

    # A grant made by hand shows, marked, with the real beside the declared.
    group = reports.replace("-", "_")
    with new_stack.server.connect(new_stack.database) as superuser:
        superuser.execute(sql.SQL("GRANT SELECT ON employee_salary TO {}").format(sql.Identifier(group)))
    drifted = access(new_stack)
    assert drifted.returncode == 1, drifted.stdout + drifted.stderr
    assert [reports, "employee_salary", "-", "SELECT", "DIFFERS"] in [
        line.split() for line in drifted.stdout.splitlines()
    ]
    with new_stack.server.connect(new_stack.database) as superuser:
        superuser.execute(sql.SQL("REVOKE SELECT ON employee_salary FROM {}").format(sql.Identifier(group)))

    # An attempt on employee_salary: refused, and the comment says why.
    new_stack.set(roles=[*after, {"name": f"m{s}-hr", "tables": ["employee_salary"], "access": "read"}])
    refused = access(new_stack, "--changes")
    print(f"\nthe refused attempt's comment:\n{refused.stdout}")
    assert refused.returncode == 1
    lines = refused.stdout.splitlines()
    assert lines[2] == "**Refused by the program: nothing is deployed until the stack file is fixed.**"
    assert lines[3] == (
        "- pgcreds:roles[3].tables: 'employee_salary' is a sensitive table (tables.py): no application role "
        "may be granted anything on it; remove it from the list"
    )
    assert "Access is unchanged: the change above is refused." in lines
