"""The deploy session has the CLI compress stack files on the team backend
(issue "The team backend at file speed"): every checkpoint rewrites the stack's
whole row, and copies the previous one to `.bak` first, so the row's size is the
backend's cost. A state written before (plain JSON) keeps working and is
compressed by the next update; a compressed one is read by a CLI run without the
setting (`pulumi stack export`), and such a CLI's update writes it back plain."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer.session import STATE_COMPRESSION
from stacks import ProgramStack, admin_connect, cleanup, make_stack

pytestmark = pytest.mark.both_servers  # and again on HashiCorp Vault (make test-vault)
((SETTING, EXTENSION),) = STATE_COMPRESSION.items()
PLAIN = {SETTING: ""}  # (an empty value is unset for the CLI)


def stack_files(stack: ProgramStack) -> dict[str, int]:
    """The stack's file in the state table, by key (its `.bak` left out): bytes stored."""
    with admin_connect("pulumi_state") as admin:
        rows = admin.execute(
            "SELECT key, octet_length(data::text) FROM pulumi_state WHERE key LIKE %s AND key NOT LIKE '%%.bak'",
            (f"%.pulumi/stacks/%/{stack.stack.name}.json%",),
        ).fetchall()
    return dict(rows)


@pytest.fixture
def team_stack(tmp_path: Path) -> Iterator[ProgramStack]:
    test_stack = make_stack(tmp_path, env={"PULUMI_BACKEND_URL": os.environ["PULUMI_BACKEND_URL"], **PLAIN})
    yield test_stack
    with test_stack.environment(**PLAIN):
        cleanup(test_stack)
        test_stack.run("stack", "rm", "--yes", "--force")


def test_the_session_compresses_the_state_and_a_plain_cli_still_reads_and_writes_it(team_stack: ProgramStack):
    assert os.environ.get(SETTING) == "true", f"the deploy session exports {SETTING}=true"
    team_stack.stack.up()  # as before the session compressed anything
    ((plain_key, plain_size),) = stack_files(team_stack).items()
    assert plain_key.endswith(".json")

    with team_stack.environment(**{SETTING: "true"}):
        assert set(team_stack.stack.up().summary.resource_changes) == {"same"}
    ((compressed_key, compressed_size),) = stack_files(team_stack).items()  # (the plain file is gone)
    assert compressed_key == plain_key + EXTENSION
    assert compressed_size * 3 < plain_size, (compressed_size, plain_size)

    # A CLI without the setting reads it: the export, and a preview.
    exported = json.loads(team_stack.run("stack", "export"))
    assert len(exported["deployment"]["resources"]) > 20
    assert set(team_stack.stack.preview().change_summary) == {"same"}
    # Its update writes the file back plain, and the session's next one compresses it again.
    assert set(team_stack.stack.up().summary.resource_changes) == {"same"}
    assert list(stack_files(team_stack)) == [plain_key]
    with team_stack.environment(**{SETTING: "true"}):
        assert set(team_stack.stack.preview().change_summary) == {"same"}
        team_stack.stack.up()
    assert list(stack_files(team_stack)) == [compressed_key]
