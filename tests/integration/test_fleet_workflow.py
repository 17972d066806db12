"""The deploy workflow's `applications` job (issue 31, item 2): ci/fleet.sh as a
workflow runs it, on the team backend, logged in to Vault as the jwt role
`pgcreds-fleet-deploy` with a GitHub-shaped token, brings the split layout's
application stacks up with the fleet command after the platform stack's own job
(ci/deploy.sh), each as its own application's deploy login; the fleet's token
can do nothing of the platform's; its preview identity changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import hvac.exceptions
import pytest
from psycopg import sql
from test_deploy_path import CI_MOUNT, CI_STACK, ci_login, github_token, remove_ci_mount, run_script, workflow_env

from deployer import DEPLOYER_ROLE, PLATFORM_MOUNT, application_login, deployer_role
from deployer.bootstrap import ensure_deploy_login, grant_schema_rights
from program_copy import add_tables, copy_program
from stacks import DEPLOYER, REPO, admin_connect, application_roles, vault

# The Vault side is the same on both servers: it runs once, in the shorter half.
pytestmark = pytest.mark.vault_half

APPLICATION = "acme"  # local/bootstrap.sh: --stack acme:citest:acme:tests


@pytest.fixture
def ci_split(tmp_path: Path) -> Iterator[tuple[Path, dict]]:
    """The checkout as the workflows see it: stack `tests` as a platform (mount citest)
    and `acme` as its application stack, both with the bootstrap's transit keys."""
    suffix = os.urandom(3).hex()
    project = copy_program(tmp_path / "checkout")
    add_tables(project, [f"{APPLICATION}_items"])
    database = f"ci_{suffix}"
    with admin_connect() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(DEPLOYER)))
        # (as the bootstrap's --app-database does for each deploy login; its password stays Vault's)
        ensure_deploy_login(admin, application_login(APPLICATION), [database])
    with admin_connect(database) as database_admin:
        grant_schema_rights(database_admin, application_login(APPLICATION))
    common = {
        "postgresPort": os.environ["PGPORT"],
        "postgresDatabase": database,
        "postgresSslMode": "verify-full",
        "postgresSslRootCert": os.environ["PGCREDS_TEST_CA"],
        "vaultAddress": os.environ["VAULT_ADDR"],
        "vaultMountPath": CI_MOUNT,
        "keepTablesOnDestroy": "false",
    }
    stacks = {
        CI_STACK: {**common, "stackKind": "platform", "postgresAdminUser": DEPLOYER, "roles": []},
        APPLICATION: {
            **common,
            "stackKind": "application",
            "platformStack": CI_STACK,
            "application": APPLICATION,
            "postgresAdminUser": application_login(APPLICATION),
            "tableOwnerRole": f"{APPLICATION}_owner",
            "vaultAdminRole": f"{APPLICATION}_vault_admin",
            "roles": application_roles(APPLICATION),
        },
    }
    for stack, config in stacks.items():
        (project / f"Pulumi.{stack}.yaml").write_text(
            json.dumps(
                {
                    "secretsprovider": f"hashivault://pgcreds-{stack}",
                    "config": {f"pgcreds:{k}": v for k, v in config.items()},
                }
            )
        )
    env = workflow_env(project, tmp_path)
    yield project, env
    for stack in (APPLICATION, CI_STACK):
        # As the operator, best effort: whatever a failed test left.
        operator = {**os.environ, "PGCREDS_STACK": stack, "PGCREDS_PROJECT": str(project)}
        for command in (["destroy", "--yes", "--skip-preview"], ["stack", "rm", "--yes", "--force"]):
            subprocess.run(
                ["pulumi", *command, "--stack", stack, "--non-interactive"],
                cwd=project,
                env=operator,
                capture_output=True,
            )
    remove_ci_mount()
    with admin_connect() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        # (the application's roles: its owner, group and Vault login, whose name has a suffix)
        for (role,) in admin.execute(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (f"{APPLICATION}\\_%",)
        ).fetchall():
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def fleet_job(env: dict, action: str, role: str) -> subprocess.CompletedProcess:
    token = ci_login(role, github_token(ref="refs/heads/main" if action == "up" else "refs/pull/7/merge")).token
    return subprocess.run(
        [str(REPO / "ci" / "fleet.sh"), action],
        env={**env, "VAULT_TOKEN": token, "PGCREDS_APPLICATION_STACKS": APPLICATION, "PGCREDS_PARALLEL": "2"},
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )


def test_the_applications_job_brings_them_up_with_the_fleet_as_its_own_identity(ci_split):
    project, env = ci_split
    runner_temp = Path(env["PGCREDS_SESSION_DIR"])
    platform = run_script("deploy.sh", env, f"pgcreds-deploy-{CI_STACK}")
    assert platform.returncode == 0, platform.stdout[-3000:] + platform.stderr[-3000:]

    # The fleet's identity: every application's deploy policy, nothing of the platform's.
    fleet_token = ci_login("pgcreds-fleet-deploy", github_token())
    paths = {
        "platform's key": f"transit/encrypt/pgcreds-{CI_STACK}",
        "deployer's password": f"{PLATFORM_MOUNT}/static-creds/{DEPLOYER_ROLE}",
        "application's key": f"transit/encrypt/pgcreds-{APPLICATION}",
        "application's login": f"{PLATFORM_MOUNT}/static-creds/{deployer_role(APPLICATION)}",
    }
    answer = fleet_token.sys.get_capabilities(paths=list(paths.values()))["data"]
    capabilities = {name: answer[path] for name, path in paths.items()}
    assert capabilities["platform's key"] == ["deny"] and capabilities["deployer's password"] == ["deny"], capabilities
    assert "update" in capabilities["application's key"] and "read" in capabilities["application's login"]
    # Bound like a deploy role: a pull request's token is refused.
    with pytest.raises((hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden)):
        ci_login("pgcreds-fleet-deploy", github_token(ref="refs/pull/7/merge"))

    deployed = fleet_job(env, "up", "pgcreds-fleet-deploy")
    print(deployed.stdout)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    assert f"fleet: [1/1] {APPLICATION}: up succeeded" in deployed.stdout
    assert "1 stacks, 0 failed: up in" in deployed.stdout
    assert list(runner_temp.iterdir()) == []  # the job's sessions are gone
    assert vault().read(f"{CI_MOUNT}/roles/{APPLICATION}-rw")["data"]["default_ttl"] == 3600

    previewed = fleet_job(env, "preview", "pgcreds-fleet-preview")
    assert previewed.returncode == 0, previewed.stdout[-3000:] + previewed.stderr[-3000:]
    assert f"fleet: [1/1] {APPLICATION}: preview succeeded, 0 changes" in previewed.stdout
    assert list(runner_temp.iterdir()) == []
