"""Bad input against a deployed stack, with the real engine: each mistake fails
`pulumi preview` (and `pulumi up`) with a message that names the setting,
before any resource changes, and nothing already deployed is lost."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pulumi import automation as auto

from stacks import DEPLOYER, REPO, ProgramStack, admin_connect, vault

INJECTION = 'x"; DROP TABLE employee_salary; --'


def roles(stack: ProgramStack, **overrides):
    return {"roles": stack.roles_config(**overrides)}


CASES = {
    "default TTL above max TTL": (lambda s: roles(s, defaultTtl="48h", maxTtl="24h"), "pgcreds:roles[0].defaultTtl"),
    "negative TTL": (lambda s: roles(s, maxTtl="-1h"), "pgcreds:roles[0].maxTtl"),
    "unparsable TTL": (lambda s: roles(s, defaultTtl="one hour"), "pgcreds:roles[0].defaultTtl"),
    "unknown access level": (lambda s: roles(s, access="superuser"), "pgcreds:roles[0].access"),
    "empty table list": (lambda s: roles(s, tables=[]), "pgcreds:roles[0].tables"),
    "table name injection": (lambda s: roles(s, tables=[INJECTION]), "pgcreds:roles[0].tables"),
    "role name injection": (lambda s: roles(s, name=INJECTION), "pgcreds:roles[0].name"),
    "invalid mount path": (lambda s: {"vaultMountPath": "../sys"}, "pgcreds:vaultMountPath"),
    "aiven without a project": (
        lambda s: {"postgresMode": "aiven", "aivenCloud": "google-europe-west1", "aivenPlan": "startup-4"},
        "pgcreds:aivenProject",
    ),
    "aiven without a token": (
        lambda s: {
            "postgresMode": "aiven",
            "aivenProject": "p",
            "aivenCloud": "google-europe-west1",
            "aivenPlan": "startup-4",
        },
        "pgcreds:aivenToken",
    ),
    "aiven plan of unknown format": (
        lambda s: {
            "postgresMode": "aiven",
            "aivenProject": "p",
            "aivenCloud": "google-europe-west1",
            "aivenPlan": "large",
        },
        "pgcreds:aivenPlan",
    ),
    "sslmode disable outside dev": (lambda s: {"environment": "production"}, "pgcreds:postgresSslMode"),
    # Guardrails that the policy pack also enforces in CI, refused on every preview and up.
    "grant on a sensitive table": (
        lambda s: roles(s, tables=["weekly_metrics_reporting", "employee_salary"]),
        "pgcreds:roles[0].tables",
    ),
    "maxTtl over 24h": (lambda s: roles(s, maxTtl="25h"), "pgcreds:roles[0].maxTtl"),
    "absurd TTL": (lambda s: roles(s, defaultTtl="9999999999999h"), "pgcreds:roles[0].defaultTtl"),
    "truncate outside the template's braces": (
        lambda s: roles(s, usernameTemplate='{{ printf "x_%s" (random 8) }} | truncate 63'),
        "pgcreds:roles[0].usernameTemplate",
    ),
    "template never closed": (
        lambda s: roles(s, usernameTemplate="{{ random 8 | truncate 63"),
        "pgcreds:roles[0].usernameTemplate",
    ),
    # Issue 19, class 3: Vault runs the names a template makes inside the statements.
    "template that injects SQL": (
        lambda s: roles(
            s, usernameTemplate='x\\"; DROP TABLE weekly_metrics_reporting; --{{ random 8 | truncate 63 }}'
        ),
        "pgcreds:roles[0].usernameTemplate: has the text",
    ),
    "template with a quote that revocation cannot undo": (
        lambda s: roles(s, usernameTemplate='{{ printf "o\'k_%s" (random 8) | truncate 63 }}'),
        "pgcreds:roles[0].usernameTemplate: has",
    ),
    "template with the caller's display name": (
        lambda s: roles(s, usernameTemplate='{{ printf "v_%s" .DisplayName | truncate 63 }}'),
        "pgcreds:roles[0].usernameTemplate: uses .DisplayName",
    ),
    # Issue 19, class 5: a secret setting written without --secret.
    "aiven token in clear": (
        lambda s: {
            "postgresMode": "aiven",
            "aivenProject": "p",
            "aivenCloud": "google-europe-west1",
            "aivenPlan": "startup-4",
            "aivenToken": "in-clear",
        },
        "pgcreds:aivenToken: is no longer read",
    ),
    # Names that can never be this program's.
    "mount path sys": (lambda s: {"vaultMountPath": "sys"}, "pgcreds:vaultMountPath"),
    "mount path cubbyhole": (lambda s: {"vaultMountPath": "cubbyhole"}, "pgcreds:vaultMountPath"),
    "mount path under auth": (lambda s: {"vaultMountPath": "auth/x"}, "pgcreds:vaultMountPath"),
    "role name pg_*": (lambda s: roles(s, name="pg-monitor"), "pgcreds:roles[0].name"),
    "role name public": (lambda s: roles(s, name="public"), "pgcreds:roles[0].name"),
    "owner equals vault admin": (lambda s: {"vaultAdminRole": f"it_{s.suffix}_owner"}, "pgcreds:vaultAdminRole"),
}


def deployed_facts(stack: ProgramStack) -> tuple:
    with admin_connect(stack.database) as admin:
        rows = admin.execute("SELECT count(*) FROM weekly_metrics_reporting").fetchone()[0]
        salaries = admin.execute("SELECT count(*) FROM employee_salary").fetchone()[0]
    return stack.resource_count(), rows, salaries


@pytest.mark.parametrize("case", CASES)
def test_bad_setting_fails_preview_and_up_without_changes(deployed_stack: ProgramStack, case: str):
    make_config, setting = CASES[case]
    before = deployed_facts(deployed_stack)
    before_config = deployed_stack.stack.get_all_config()
    deployed_stack.set(**make_config(deployed_stack))
    try:
        for operation in (deployed_stack.stack.preview, deployed_stack.stack.up):
            with pytest.raises(auto.CommandError) as failure:
                operation()
            assert setting in str(failure.value)
            assert "nothing was changed" in str(failure.value)
    finally:
        for key in make_config(deployed_stack):
            full_key = f"pgcreds:{key}"
            if full_key in before_config:
                deployed_stack.stack.set_config(full_key, before_config[full_key])
            else:
                deployed_stack.stack.remove_config(full_key)
    assert deployed_facts(deployed_stack) == before
    with admin_connect(deployed_stack.database) as admin:
        assert admin.execute("SELECT to_regclass('employee_salary') IS NOT NULL").fetchone()[0]


@pytest.mark.parametrize(
    "environment, expected",
    [
        # No deploy session: the workspace passes its environment on, an empty value is unset.
        ({"PGPASSFILE": ""}, "pgcreds:postgresAdminUser: no login for 'pgcreds_deployer': open a deploy session"),
        # A static admin password in the environment is refused, not used.
        ({"PGCREDS_POSTGRES_ADMIN_PASSWORD": "static"}, "a static admin password is not taken"),
    ],
)
def test_the_admin_login_comes_only_from_a_deploy_session(deployed_stack: ProgramStack, environment, expected):
    before = deployed_facts(deployed_stack)
    with deployed_stack.environment(**environment), pytest.raises(auto.CommandError) as failure:
        deployed_stack.stack.preview()
    assert expected in str(failure.value)
    assert deployed_facts(deployed_stack) == before


def test_a_change_that_would_drop_a_table_holding_data_is_refused(deployed_stack: ProgramStack):
    tables = deployed_stack.project_dir / "tables.py"
    original = tables.read_text()
    tables.write_text(original.replace('("github_stars", "INT NOT NULL', '("github_stars", "BIGINT NOT NULL'))
    try:
        with pytest.raises(auto.CommandError) as failure:
            deployed_stack.stack.preview()
    finally:
        tables.write_text(original)
    message = str(failure.value)
    assert "weekly_metrics_reporting" in message and "holds 3 rows" in message and "Nothing was changed" in message
    assert deployed_facts(deployed_stack)[1] == 3
    assert set(deployed_stack.stack.up().summary.resource_changes) == {"same"}


@pytest.fixture
def default_policy_token() -> Iterator[str]:
    token = vault().auth.token.create(policies=["default"], ttl="10m")["auth"]["client_token"]
    yield token
    vault().auth.token.revoke(token)


def test_a_login_that_does_not_work_stops_preview_and_up_and_nothing_is_recorded(
    deployed_stack: ProgramStack, tmp_path: Path, default_policy_token: str
):
    """Issue 19, class 4: each login is tried once, before anything is registered."""
    wrong_pgpass = tmp_path / "pgpass"
    wrong_pgpass.write_text(f"*:*:*:{DEPLOYER}:not-the-password\n")
    wrong_pgpass.chmod(0o600)
    # The stack's secrets stay readable: the secrets provider reads VAULT_SERVER_TOKEN first.
    keep_secrets = {"VAULT_SERVER_TOKEN": os.environ["VAULT_TOKEN"]}
    cases = [
        (
            {"PGPASSFILE": str(wrong_pgpass)},
            (
                "pgcreds:postgresAdminUser: PostgreSQL at 127.0.0.1",
                f"refused the login of '{DEPLOYER}'",
                "PGPASSFILE",
                "password authentication failed",
            ),
        ),
        ({"VAULT_TOKEN": "hvs.no-such-token", **keep_secrets}, ("VAULT_TOKEN is not accepted by Vault",)),
        (
            {"VAULT_TOKEN": default_policy_token, **keep_secrets},
            ("VAULT_TOKEN may not do what this", "auth/token/create", "policy"),
        ),
    ]
    before = deployed_facts(deployed_stack)
    for environment, expected in cases:
        for operation in (deployed_stack.stack.preview, deployed_stack.stack.up):
            with deployed_stack.environment(**environment), pytest.raises(auto.CommandError) as failure:
                operation()
            message = str(failure.value)
            assert all(text in message for text in expected) and "Traceback" not in message, message[-3000:]
            assert "Nothing was changed" in message
    assert deployed_facts(deployed_stack) == before
    assert "not-the-password" not in deployed_stack.raw_state()
    assert set(deployed_stack.stack.up().summary.resource_changes) == {"same"}


def test_a_missing_vault_ca_file_is_named(deployed_stack: ProgramStack, tmp_path: Path):
    """The deploy session, which every run opens first, names the variable and the
    path; the CLI (whose secrets provider is Vault) names the path; neither changes anything."""
    missing = tmp_path / "no-such-ca.pem"
    session = subprocess.run(
        [sys.executable, "-m", "deployer.session", "--renew"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "VAULT_CACERT": str(missing)},
    )
    assert session.returncode != 0 and "PGPASSFILE" not in session.stdout
    assert f"VAULT_CACERT names '{missing}', which is not a file" in session.stderr, session.stderr
    before = deployed_facts(deployed_stack)
    with deployed_stack.environment(VAULT_CACERT=str(missing)), pytest.raises(auto.CommandError) as failure:
        deployed_stack.stack.preview()
    assert str(missing) in str(failure.value) and "Traceback" not in str(failure.value)
    assert deployed_facts(deployed_stack) == before
