"""Many application stacks in one command (issue "The team backend at file speed",
item 2): `python -m deployer.fleet` runs them a few at a time, each as its own
deploy login, prints a line per stack and one table, and a failed stack neither
stops the others nor hides its reason; the exit code says that one failed."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from stacks import REPO, SplitStacks, application_roles, split_on_postgres18


@pytest.fixture
def three_applications(tmp_path: Path) -> Iterator[SplitStacks]:
    with split_on_postgres18(tmp_path, 3) as organisation:
        yield organisation


def fleet(split: SplitStacks, *arguments: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, **split.platform.stack.workspace.env_vars}
    environment.pop("PGUSER", None)  # each stack's own login, from its stack file
    return subprocess.run(
        [str(REPO / "venv/bin/python"), "-m", "deployer.fleet", *arguments, "--cwd", str(split.platform.project_dir)],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_a_fleet_up_goes_on_past_a_failed_stack_and_says_why(three_applications: SplitStacks):
    three_applications.platform.stack.up()
    (good_a, stack_a), (broken, stack_broken), (good_b, stack_b) = three_applications.applications.items()
    stack_broken.set(roles=application_roles(broken, tables=[f"{broken}_items", "made_by_no_one"]))

    ran = fleet(three_applications, "up", "--all", "--parallel", "2")
    print(ran.stdout)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    lines = ran.stdout.splitlines()
    assert len([line for line in lines if line.startswith("fleet: [")]) == 3
    for stack in (stack_a, stack_b):
        assert re.search(rf"^{stack.stack.name}\s+succeeded\s+\d+ \(\+\d+\)\s+\d+\.\d$", ran.stdout, re.MULTILINE)
    assert re.search(rf"^{stack_broken.stack.name}\s+failed\s", ran.stdout, re.MULTILINE)
    assert "3 stacks, 1 failed: up in" in ran.stdout
    reason = ran.stdout.split(f"{stack_broken.stack.name} failed. Why, in the program's words:")[1]
    assert "'made_by_no_one'" in reason and "Traceback" not in reason
    for stack in (stack_a, stack_b):
        assert stack.outputs()["appRoles"]  # deployed, as its own login

    previewed = fleet(three_applications, "preview", stack_a.stack.name, stack_b.stack.name)
    assert previewed.returncode == 0, previewed.stdout + previewed.stderr
    for stack in (stack_a, stack_b):
        assert re.search(rf"^{stack.stack.name}\s+succeeded\s+0\s", previewed.stdout, re.MULTILINE)
