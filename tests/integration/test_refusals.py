"""A refusal the program makes on purpose ends `make`'s output as its own message
(issue "No single mistake wedges a stack", classes 7 and 8): not inside a
dynamic provider's traceback, not above the stack's outputs."""

from __future__ import annotations

import os
import subprocess

from psycopg import sql

from stacks import REPO, ProgramStack, admin_connect


def make_style_up(stack: ProgramStack) -> subprocess.CompletedProcess:
    """`pulumi up` as the Makefile runs it (local/pulumi_run.py)."""
    return subprocess.run(
        [
            str(REPO / "venv/bin/python"),
            str(REPO / "local/pulumi_run.py"),
            "up",
            "--yes",
            "--skip-preview",
            "--stack",
            stack.stack.name,
        ],
        cwd=stack.project_dir,
        env={**os.environ, **stack.stack.workspace.env_vars},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_grant_only_a_superuser_may_revoke_ends_the_output_with_the_statement(new_stack: ProgramStack):
    new_stack.stack.up()
    group = new_stack.role_name.replace("-", "_")
    with admin_connect(new_stack.database) as admin:
        admin.execute(sql.SQL("GRANT EXECUTE ON FUNCTION pg_catalog.now() TO {}").format(sql.Identifier(group)))
    stopped = make_style_up(new_stack)
    assert stopped.returncode != 0
    tail = stopped.stdout.rstrip().splitlines()[-5:]
    assert tail[0] == f"pulumi up stopped (exit {stopped.returncode}). Why, in the program's words:", tail
    assert "may not take back" in tail[1] and "A superuser must run:" in tail[3], tail
    assert tail[-1].strip() == f'REVOKE EXECUTE ON ROUTINE now() FROM "{group}";', tail
    assert "Traceback" not in "\n".join(tail)
    with admin_connect(new_stack.database) as admin:
        admin.execute(tail[-1].strip())
    assert make_style_up(new_stack).returncode == 0


def test_a_bad_setting_ends_the_output_with_the_setting_and_the_fix(new_stack: ProgramStack):
    new_stack.set(postgresPort="99999")
    stopped = make_style_up(new_stack)
    assert stopped.returncode != 0
    tail = stopped.stdout.rstrip().splitlines()
    end = tail[tail.index(next(line for line in tail if line.startswith("pulumi up stopped"))) :]
    assert any("pgcreds:postgresPort: must be a TCP port number (1-65535), not '99999'" in line for line in end), end
    assert not any("unhandled error" in line or "Traceback" in line for line in end), end
