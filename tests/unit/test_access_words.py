"""The access report's words (review/access.py), from stack files read by the
program's own settings code: the five changes a reviewer must see, a refusal with
its reason, the no-change line, and the diagram checked by Mermaid's own parser
(toolchain/mermaid.sh, pinned). The same report on a deployed stack and through
ci/preview.sh: tests/integration/test_access_report.py, test_deploy_path.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from review.access import Report, comment, from_outputs, mermaid, stack_file_roles
from sourced_env import REPO

BEFORE = [
    {"name": "billing-rw", "tables": ["invoices"], "access": "readwrite", "defaultTtl": "1h", "maxTtl": "24h"},
    {"name": "reports", "tables": ["weekly_metrics_reporting"], "access": "readwrite"},
]
AFTER = [
    # a table added to a role, and a TTL change
    {
        "name": "billing-rw",
        "tables": ["invoices", "payments"],
        "access": "readwrite",
        "defaultTtl": "30m",
        "maxTtl": "24h",
    },
    # a privilege removed: readwrite -> read
    {"name": "reports", "tables": ["weekly_metrics_reporting"], "access": "read"},
    # a role added
    {"name": "audit", "tables": ["invoices"], "access": "read", "defaultTtl": "15m", "maxTtl": "1h"},
]


def stack_file(folder: Path, roles: list[dict]) -> Path:
    path = folder / "Pulumi.review.yaml"
    path.write_text(yaml.safe_dump({"config": {"pgcreds:roles": roles}}))
    return path


def report(tmp_path: Path, before: list[dict], after: list[dict]) -> Report:
    old, refused_before = stack_file_roles(stack_file(tmp_path, before))
    assert refused_before == []
    new, refused = stack_file_roles(stack_file(tmp_path, after))
    return Report("review", old, new, refused)


def test_the_five_changes_line_by_line(tmp_path: Path):
    body = comment(report(tmp_path, BEFORE, AFTER))
    lines = body.splitlines()
    assert lines[:9] == [
        "#### Access changes on stack `review`",
        "",
        "- new role `audit`: SELECT on `invoices`; credentials last 15m, at most 1h",
        "- `billing-rw` gains SELECT, INSERT, UPDATE, DELETE on `payments`",
        "- `billing-rw`: credentials last 30m instead of 1h",
        "- `reports` loses INSERT, UPDATE, DELETE on `weekly_metrics_reporting`",
        "- nobody gains `employee_salary`",
        "",
        "<details><summary>who can reach which table, after this pull request</summary>",
    ]
    assert lines[10] == "```mermaid" and lines[-2] == "```" and lines[-1] == "</details>"


def test_a_removed_role_and_a_lock_are_said(tmp_path: Path):
    locked = [{**BEFORE[0], "locked": True}]
    lines = comment(report(tmp_path, BEFORE, locked)).splitlines()
    assert (
        "- role removed: `reports` (had SELECT, INSERT, UPDATE, DELETE on `weekly_metrics_reporting`); "
        "its live credentials are revoked" in lines
    )
    assert "- `billing-rw` is locked: Vault issues it no new credentials" in lines


def test_an_attempt_on_employee_salary_is_refused_and_the_comment_says_why(tmp_path: Path):
    attempt = [*BEFORE, {"name": "hr", "tables": ["employee_salary"], "access": "read"}]
    refused = report(tmp_path, BEFORE, attempt)
    assert refused.refused
    lines = comment(refused).splitlines()
    assert lines[:7] == [
        "#### Access changes on stack `review`",
        "",
        "**Refused by the program: nothing is deployed until the stack file is fixed.**",
        "- pgcreds:roles[2].tables: 'employee_salary' is a sensitive table (tables.py): no application role "
        "may be granted anything on it; remove it from the list",
        "",
        "Access is unchanged: the change above is refused.",
        "- nobody gains `employee_salary`",
    ]
    assert "who can reach which table, as deployed" in lines[8]
    assert "hr" not in mermaid(refused.before)


def test_no_access_change_is_one_line(tmp_path: Path):
    lines = comment(report(tmp_path, BEFORE, BEFORE)).splitlines()
    assert lines[2:4] == ["This pull request changes no access.", "- nobody gains `employee_salary`"]


def test_a_stack_deployed_before_ttls_were_exported_says_no_ttl_change():
    """Outputs from before this report carry no TTLs: a change of them cannot be told, and is not invented."""
    outputs = {"roleAccess": {"reports": {"access": "read", "tables": ["weekly_metrics_reporting"]}}}
    after = from_outputs(
        {
            "roleAccess": {
                "reports": {
                    "access": "read",
                    "tables": ["weekly_metrics_reporting"],
                    "defaultTtl": 1800,
                    "maxTtl": 3600,
                }
            }
        }
    )
    assert comment(Report("review", from_outputs(outputs), after)).splitlines()[2] == (
        "This pull request changes no access."
    )


@pytest.fixture(scope="module")
def mermaid_parser() -> str:
    return subprocess.run(
        [str(REPO / "toolchain" / "mermaid.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()


def parse(parser: str, *diagrams: str) -> list[str]:
    return subprocess.run(
        ["node", parser], input="\n%%%\n".join(diagrams), capture_output=True, text=True, check=True, timeout=120
    ).stdout.splitlines()


def test_the_diagrams_parse_with_mermaids_own_parser(tmp_path: Path, mermaid_parser: str):
    after = report(tmp_path, BEFORE, AFTER).after
    migrate = {
        **after,
        **stack_file_roles(stack_file(tmp_path, [{"name": "schema-migrations", "access": "migrate"}]))[0],
    }
    broken = mermaid(after).replace('-->|"', '-->|"unclosed ', 1).replace('"|', "|", 1)
    assert parse(mermaid_parser, mermaid(after), mermaid(migrate), mermaid({})) == ["ok", "ok", "ok"]
    # The check could fail: a diagram Mermaid refuses is reported as such.
    assert parse(mermaid_parser, broken)[0].startswith("error:")
