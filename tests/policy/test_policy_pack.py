"""Each guardrail of the policy pack, enforced by the real engine
(`pulumi preview --policy-pack policy`): a program that breaks it is rejected
with the rule's message, one that keeps it passes."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from pulumi import automation as auto

from program_copy import copy_program
from sourced_env import TEST_SECRETS_PROVIDER, file_backend, sourced_env

REPO = Path(__file__).resolve().parents[2]
POLICY_PACK = str(REPO / "policy")


@pytest.fixture(scope="module", autouse=True)
def toolchain_on_path() -> None:
    os.environ.update(
        {
            key: value
            for key, value in sourced_env("toolchain/env.sh").items()
            if key == "PATH" or key.startswith("PULUMI_")
        }
    )
    assert shutil.which("pulumi")


def preview(tmp_path: Path, case: str, environment: str = "staging") -> auto.PreviewResult:
    program = tmp_path / "program"
    shutil.copytree(Path(__file__).parent / "program", program)
    (program / "Pulumi.yaml").write_text(
        (program / "Pulumi.yaml").read_text().replace("../../../venv", str(REPO / "venv"))
    )
    stack = auto.create_stack(
        stack_name=environment,
        work_dir=str(program),
        opts=auto.LocalWorkspaceOptions(
            secrets_provider=TEST_SECRETS_PROVIDER,
            env_vars={
                **file_backend(tmp_path / "state"),
                # the program and its dynamic providers import the project's own modules
                "PYTHONPATH": str(REPO),
            },
        ),
    )
    stack.set_config("policy-cases:case", auto.ConfigValue(case))
    return stack.preview(policy_packs=[POLICY_PACK])


VIOLATIONS = {
    "max-ttl-48h": ("vault-role-ttl-limits", "it must be at most 24h"),
    "default-above-max": ("vault-role-ttl-limits", "exceeds max_ttl"),
    "no-valid-until": ("vault-role-credentials-expire", "VALID UNTIL '{{expiration}}'"),
    "password-in-url": ("no-credentials-in-connection-url", "connection_url carries credentials"),
    "grant-on-sensitive-table": ("no-grants-on-sensitive-tables", "sensitive table 'employee_salary'"),
    "grant-on-every-table": ("no-grants-on-sensitive-tables", "covers every table in the schema"),
    "sslmode-disable-in-url": ("no-sslmode-disable-outside-dev", "allowed on dev only"),
    "sslmode-disable-in-connection": ("no-sslmode-disable-outside-dev", "allowed on dev only"),
    "aiven-without-termination-protection": ("aiven-termination-protection", "must be on outside dev"),
}


@pytest.mark.parametrize("case", VIOLATIONS)
def test_violation_is_rejected(tmp_path: Path, case: str):
    policy, message = VIOLATIONS[case]
    with pytest.raises(auto.CommandError) as failure:
        preview(tmp_path, case)
    output = str(failure.value)
    assert policy in output and message in output and "mandatory" in output


def test_compliant_program_passes(tmp_path: Path):
    result = preview(tmp_path, "compliant")
    # the stack, three explicit providers (vault, postgresql, aiven) and four resources
    assert result.change_summary.get("create", 0) == 8


def test_aiven_service_may_go_unprotected_on_dev(tmp_path: Path):
    # the stack, the vault provider (declared for every case), the aiven provider and the service
    assert preview(tmp_path, "aiven-without-termination-protection", environment="dev").change_summary["create"] == 4


def test_sslmode_disable_is_allowed_on_dev(tmp_path: Path):
    assert preview(tmp_path, "sslmode-disable-in-url", environment="dev").change_summary.get("create") == 3


@pytest.mark.parametrize("stack_name", ["dev", "staging"])
def test_the_program_itself_keeps_every_guardrail(tmp_path: Path, stack_name: str):
    """What `make pr-check` and the pull-request workflow run, on the shipped stacks. The
    preview reads Vault's mount table and PostgreSQL's roles, so the stack's servers
    are pointed at the local ones (the staging stack keeps verify-full, with the
    local test CA) and its role names made unique; every other setting is the shipped one."""
    for script in ("postgres.sh", "vault-server.sh"):
        subprocess.run([str(REPO / "local" / script), "start"], check=True, capture_output=True)
    servers = sourced_env("local/dev-env.sh")
    project = copy_program(tmp_path / "project", stack_files=("Pulumi.dev.yaml", "Pulumi.staging.yaml"))
    stack = auto.create_stack(
        stack_name=stack_name,
        work_dir=str(project),
        opts=auto.LocalWorkspaceOptions(
            secrets_provider=TEST_SECRETS_PROVIDER,
            env_vars={**file_backend(tmp_path / "state"), "PGPASSFILE": servers["PGPASSFILE"]},
        ),
    )
    suffix = secrets.token_hex(3)
    roles = json.loads(stack.get_config("pgcreds:roles").value)
    local = {
        "postgresHost": "127.0.0.1",
        "postgresPort": servers["PGPORT"],
        "postgresDatabase": "postgres",
        "postgresAdminUser": "pgcreds_deployer",
        "vaultAddress": servers["VAULT_ADDR"],
        "tableOwnerRole": f"pc_{suffix}_owner",
        "vaultAdminRole": f"pc_{suffix}_vault_admin",
        "roles": json.dumps([{**role, "name": f"pc{suffix}-{role['name']}"} for role in roles]),
    }
    if stack.get_all_config().get("pgcreds:postgresSslRootCert"):
        local["postgresSslRootCert"] = servers["PGCREDS_TEST_CA"]
    for key, value in local.items():
        stack.set_config(f"pgcreds:{key}", auto.ConfigValue(value))
    result = stack.preview(policy_packs=[POLICY_PACK])
    assert result.change_summary.get("create", 0) >= 16  # everything, and not stopped by a policy
