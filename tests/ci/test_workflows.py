"""The GitHub Actions workflows: actionlint passes them (and would catch a
mistake), and they keep the promises the README makes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"


@pytest.fixture(scope="module")
def actionlint() -> str:
    return subprocess.run([str(REPO / "toolchain" / "actionlint.sh")], check=True, capture_output=True,
                          text=True).stdout.strip()


def load(name: str) -> dict:
    # YAML reads the key `on` as True.
    return yaml.safe_load((WORKFLOWS / name).read_text())


def test_actionlint_passes_the_workflows(actionlint: str):
    result = subprocess.run([actionlint, "-no-color", *sorted(map(str, WORKFLOWS.glob("*.yml")))],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(actionlint: str, tmp_path: Path):
    broken = (WORKFLOWS / "preview.yml").read_text().replace("${{ matrix.stack }}", "${{ matrix.stak }}")
    (tmp_path / "broken.yml").write_text(broken)
    result = subprocess.run([actionlint, "-no-color", str(tmp_path / "broken.yml")], capture_output=True, text=True)
    assert result.returncode != 0 and "stak" in result.stdout


def test_pull_requests_preview_every_stack_with_the_policy_pack_and_comment():
    workflow = load("preview.yml")
    assert list(workflow[True]) == ["pull_request"]
    assert workflow["permissions"] == {"contents": "read", "pull-requests": "write"}
    job = workflow["jobs"]["preview"]
    assert "permissions" not in job  # nothing added at job level
    pulumi = next(step for step in job["steps"] if str(step.get("uses", "")).startswith("pulumi/actions"))
    assert pulumi["with"]["command"] == "preview" and pulumi["with"]["comment-on-pr"] is True
    assert pulumi["with"]["policyPacks"] == "policy" and pulumi["with"]["diff"] is True


def test_merges_update_each_stack_in_its_own_concurrency_group():
    workflow = load("deploy.yml")
    assert workflow[True] == {"push": {"branches": ["main"]}}
    job = workflow["jobs"]["up"]
    assert job["concurrency"] == {"group": "pulumi-stack-${{ matrix.stack }}", "cancel-in-progress": False}
    pulumi = next(step for step in job["steps"] if str(step.get("uses", "")).startswith("pulumi/actions"))
    assert pulumi["with"]["command"] == "up" and pulumi["with"]["policyPacks"] == "policy"


def test_teardown_is_manual_and_needs_the_stack_name_typed_again():
    workflow = load("destroy.yml")
    assert list(workflow[True]) == ["workflow_dispatch"]
    assert set(workflow[True]["workflow_dispatch"]["inputs"]) == {"stack", "confirm"}
    steps = workflow["jobs"]["destroy"]["steps"]
    assert "CONFIRM" in steps[0]["env"] and '"$STACK" != "$CONFIRM"' in steps[0]["run"]
    assert workflow["jobs"]["destroy"]["concurrency"]["group"] == "pulumi-stack-${{ inputs.stack }}"


def test_no_credentials_are_written_into_workflow_files():
    for path in WORKFLOWS.glob("*.yml"):
        for line in path.read_text().splitlines():
            if any(key in line for key in ("PASSWORD:", "PASSPHRASE:", "TOKEN:")):
                assert "${{ secrets." in line, f"{path.name}: {line.strip()}"
