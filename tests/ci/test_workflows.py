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
    return subprocess.run(
        [str(REPO / "toolchain" / "actionlint.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()


def load(name: str) -> dict:
    # YAML reads the key `on` as True.
    return yaml.safe_load((WORKFLOWS / name).read_text())


def test_actionlint_passes_the_workflows(actionlint: str):
    result = subprocess.run(
        [actionlint, "-no-color", *sorted(map(str, WORKFLOWS.glob("*.yml")))], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(actionlint: str, tmp_path: Path):
    broken = (WORKFLOWS / "preview.yml").read_text().replace("${{ matrix.stack }}", "${{ matrix.stak }}")
    (tmp_path / "broken.yml").write_text(broken)
    result = subprocess.run([actionlint, "-no-color", str(tmp_path / "broken.yml")], capture_output=True, text=True)
    assert result.returncode != 0 and "stak" in result.stdout


def step_running(job: dict, script: str) -> dict:
    return next(step for step in job["steps"] if step.get("run") == script)


def vault_login(job: dict) -> dict:
    return next(step for step in job["steps"] if str(step.get("uses", "")).startswith("hashicorp/vault-action"))


def test_pull_requests_preview_every_stack_with_the_policy_pack_and_comment():
    workflow = load("preview.yml")
    assert list(workflow[True]) == ["pull_request"]
    assert workflow["permissions"] == {"contents": "read", "pull-requests": "write", "id-token": "write"}
    job = workflow["jobs"]["preview"]
    assert "permissions" not in job  # nothing added at job level
    step_running(job, "ci/preview.sh")
    assert "--policy-pack" in (REPO / "ci" / "preview.sh").read_text()
    comment = next(step for step in job["steps"] if "gh pr comment" in step.get("run", ""))
    assert comment["env"]["BODY"] == "preview-${{ matrix.stack }}.md"
    assert vault_login(job)["with"]["role"] == "pgcreds-preview-${{ matrix.stack }}"


def test_merges_update_each_stack_in_its_own_concurrency_group():
    workflow = load("deploy.yml")
    assert workflow[True] == {"push": {"branches": ["main"]}}
    job = workflow["jobs"]["up"]
    assert job["concurrency"] == {"group": "pulumi-stack-${{ matrix.stack }}", "cancel-in-progress": False}
    step_running(job, "ci/deploy.sh")
    assert "--policy-pack" in (REPO / "ci" / "deploy.sh").read_text()
    assert vault_login(job)["with"]["role"] == "pgcreds-deploy-${{ matrix.stack }}"


def test_merges_update_the_application_stacks_in_one_job_after_the_others():
    """The split layout's application stacks: one job, ci/fleet.sh (a few at a time, the
    policy pack enforced), after the stacks job, as the fleet's own jwt role."""
    job = load("deploy.yml")["jobs"]["applications"]
    assert job["needs"] == "up" and "vars.PGCREDS_APPLICATION_STACKS" in job["if"]
    assert job["concurrency"] == {"group": "pulumi-application-stacks", "cancel-in-progress": False}
    step_running(job, "ci/fleet.sh up")
    assert "--ci" in (REPO / "ci" / "fleet.sh").read_text()
    assert vault_login(job)["with"]["role"] == "pgcreds-fleet-deploy"


def test_teardown_is_manual_and_needs_the_stack_name_typed_again():
    workflow = load("destroy.yml")
    assert list(workflow[True]) == ["workflow_dispatch"]
    assert set(workflow[True]["workflow_dispatch"]["inputs"]) == {"stack", "confirm"}
    job = workflow["jobs"]["destroy"]
    steps = job["steps"]
    assert "CONFIRM" in steps[0]["env"] and '"$STACK" != "$CONFIRM"' in steps[0]["run"]
    assert job["concurrency"]["group"] == "pulumi-stack-${{ inputs.stack }}"
    step_running(job, "ci/destroy.sh")


def test_a_schedule_reports_drift_read_only():
    workflow = load("drift.yml")
    assert [entry["cron"] for entry in workflow[True]["schedule"]] and "workflow_dispatch" in workflow[True]
    assert workflow["permissions"] == {"contents": "read", "id-token": "write"}
    job = workflow["jobs"]["drift"]
    step_running(job, "ci/drift.sh")
    assert (
        "--read-only" in (REPO / "ci" / "drift.sh").read_text() and "drift.py" in (REPO / "ci" / "drift.sh").read_text()
    )
    assert vault_login(job)["with"]["role"] == "pgcreds-preview-${{ matrix.stack }}"


@pytest.mark.parametrize("name", ["preview.yml", "deploy.yml", "destroy.yml", "drift.yml"])
def test_every_workflow_logs_in_to_vault_with_its_oidc_token_and_stores_no_secret(name: str):
    """The deploy path keeps no static secret: no password, passphrase or Vault
    token comes from GitHub's secrets; Vault is reached with the job's OIDC token."""
    text = (WORKFLOWS / name).read_text()
    assert "secrets." not in text and "PASSPHRASE" not in text and "PASSWORD" not in text
    workflow = load(name)
    assert workflow["permissions"]["id-token"] == "write"
    for job in workflow["jobs"].values():
        login = vault_login(job)["with"]
        assert login["method"] == "jwt" and login["exportToken"] is True
        stacks = (
            {"PGCREDS_APPLICATION_STACKS", "PGCREDS_PARALLEL"} if "ci/fleet.sh up" in str(job) else {"PGCREDS_STACK"}
        )
        assert set(job["env"]) == stacks | {"PULUMI_BACKEND_URL", "VAULT_ADDR"}
