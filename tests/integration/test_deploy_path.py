"""The deploy path holds no static secret, tested for real on the local servers:
the `postgres://` state backend (its logins issued by Vault) and its locking,
stack secrets encrypted by Vault transit, the program's PostgreSQL login issued
and rotated by Vault, CI's short-lived identity (jwt auth with GitHub-shaped
tokens signed by a local key), and the workflows' scripts run with only the
environment a workflow gives them."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import hvac
import hvac.exceptions
import psycopg
import pytest
from psycopg import sql
from pulumi import automation as auto

from clients.state_blob import state_blob
from clients.tls import vault_tls_verify
from deployer.bootstrap import GITHUB_ISSUER
from program_copy import copy_program
from sourced_env import session_exports, sourced_env, superuser_password
from stacks import DEPLOYER, REPO, ProgramStack, admin_connect, cleanup, deployer_password, make_stack, vault

REPOSITORY = "local/pg-dynamic-creds"  # what local/bootstrap.sh binds the jwt roles to
CI_STACK, CI_MOUNT = "tests", "citest"  # the bootstrap's `--stack tests:citest`


# --- helpers ------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def github_token(repository: str = REPOSITORY, ref: str = "refs/heads/main", audience: str = "pgcreds-vault") -> str:
    """A token shaped like the one GitHub Actions issues to a job (RS256), signed by
    the local key that stands in for GitHub's issuer."""
    now = int(time.time())
    claims = {
        "iss": GITHUB_ISSUER,
        "aud": audience,
        "sub": f"repo:{repository}:ref:{ref}",
        "repository": repository,
        "ref": ref,
        "event_name": "push",
        "iat": now,
        "nbf": now - 5,
        "exp": now + 600,
    }
    signing_input = ".".join(b64url(json.dumps(part).encode()) for part in ({"alg": "RS256", "typ": "JWT"}, claims))
    key = Path(os.environ["PGCREDS_LOCAL_DIR"]) / "ci-oidc" / "issuer.key.pem"
    signature = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", str(key)], input=signing_input.encode(), capture_output=True, check=True
    ).stdout
    return f"{signing_input}.{b64url(signature)}"


def ci_login(role: str, token: str) -> hvac.Client:
    """What hashicorp/vault-action does with `method: jwt`."""
    client = hvac.Client(url=os.environ["VAULT_ADDR"], verify=vault_tls_verify())
    answer = client.write("auth/jwt/login", role=role, jwt=token)
    client.token = answer["auth"]["client_token"]
    return client


def state_rows(key_like: str = "%") -> list[tuple[str, bytes]]:
    """The postgres:// backend's rows (key, the stored bytes), read as the superuser."""
    with admin_connect("pulumi_state") as admin:
        rows = admin.execute("SELECT key, data->>'data' FROM pulumi_state WHERE key LIKE %s", (key_like,)).fetchall()
    return [(key, state_blob(data)) for key, data in rows]


def lock_rows(stack: str) -> list[str]:
    return [key for key, _ in state_rows(f"%.pulumi/locks/%/pgcreds/{stack}/%.json")]


def wait_for(condition, timeout: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def postgres_backend_stack(tmp_path: Path) -> ProgramStack:
    """A test stack whose state lives in the team backend (the local state database)."""
    return make_stack(tmp_path, env={"PULUMI_BACKEND_URL": os.environ["PULUMI_BACKEND_URL"]})


def remove_postgres_stack(test_stack: ProgramStack) -> None:
    cleanup(test_stack)
    try:
        test_stack.stack.workspace.remove_stack(test_stack.stack.name, force=True)
    except auto.CommandError:
        pass


@pytest.fixture
def pg_stack(tmp_path: Path) -> Iterator[ProgramStack]:
    test_stack = postgres_backend_stack(tmp_path)
    yield test_stack
    remove_postgres_stack(test_stack)


def cli(
    test_stack: ProgramStack, *args: str, env: dict | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["pulumi", *args, "--stack", test_stack.stack.name, "--non-interactive"],
        cwd=cwd or test_stack.project_dir,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **test_stack.stack.workspace.env_vars, **(env or {})},
    )


# --- 1. the postgres:// backend: where the state is, and its locks --------------


@pytest.mark.both_servers
def test_state_is_in_the_state_database_with_no_secret_readable_without_vault(pg_stack: ProgramStack):
    up = pg_stack.stack.up()
    assert pg_stack.smoke_check().passed
    # The backend URL carries no credential; the login is Vault's, short-lived.
    url = urlsplit(os.environ["PULUMI_BACKEND_URL"])
    assert url.scheme == "postgres" and url.hostname == "127.0.0.1" and url.password is None
    state_user = url.username
    assert state_user.startswith("v-") and "PGPASSWORD" not in os.environ
    assert os.environ["PGUSER"] == DEPLOYER and os.environ["PGCREDS_SESSION_KIND"] == "deploy"
    passfile = Path(os.environ["PGPASSFILE"])
    assert passfile.stat().st_mode & 0o777 == 0o600 and passfile.parent.stat().st_mode & 0o777 == 0o700
    with admin_connect() as admin:
        valid_until = admin.execute("SELECT rolvaliduntil FROM pg_roles WHERE rolname = %s", (state_user,)).fetchone()[
            0
        ]
    assert valid_until is not None  # the state login expires on its own

    stored = b"\n".join(data for _, data in state_rows(f"%{pg_stack.stack.name}%"))
    assert b"hashivault://pgcreds-tests" in stored  # the stack's secrets provider
    assert b'"ciphertext"' in stored  # its secrets are stored encrypted
    secrets = [pg_stack.vault_admin_password(), deployer_password(), superuser_password(), os.environ["VAULT_TOKEN"]]
    for secret in secrets:
        assert secret.encode() not in stored and secret not in up.stdout + up.stderr
    # The program's admin password is recorded nowhere, not even encrypted.
    exported = pg_stack.run("stack", "export", "--show-secrets")
    assert deployer_password() not in exported and superuser_password() not in exported


@pytest.mark.both_servers
def test_without_the_transit_key_export_and_preview_fail_naming_it(pg_stack: ProgramStack):
    pg_stack.stack.up()
    root = vault()
    # Everything a deployer has, but the transit key.
    token = root.auth.token.create(policies=["default"], ttl="10m")["auth"]["client_token"]
    for command in (("stack", "export", "--show-secrets"), ("preview",)):
        result = cli(pg_stack, *command, env={"VAULT_TOKEN": token, "BAO_TOKEN": token})
        assert result.returncode != 0, command
        assert (
            "transit/decrypt/pgcreds-tests" in result.stderr + result.stdout and "403" in result.stderr + result.stdout
        )
    root.auth.token.revoke(token)


def test_two_ups_from_two_clones_the_second_is_refused_by_the_lock(pg_stack: ProgramStack, tmp_path: Path):
    pg_stack.stack.up()
    pg_stack.set(roles=pg_stack.roles_config(defaultTtl="2h"))
    second_clone = copy_program(tmp_path / "second-clone", stack_files=())
    shutil.copy(pg_stack.project_dir / f"Pulumi.{pg_stack.stack.name}.yaml", second_clone)
    env = {**os.environ, **pg_stack.stack.workspace.env_vars}
    command = ["pulumi", "up", "--yes", "--skip-preview", "--refresh", "--stack", pg_stack.stack.name]
    first = subprocess.Popen(
        command, cwd=pg_stack.project_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    wait_for(lambda: lock_rows(pg_stack.stack.name), what="the first up's lock")
    time.sleep(1)
    second = subprocess.run(command, cwd=second_clone, env=env, capture_output=True, text=True, timeout=300)
    first_output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, first_output[-3000:]
    assert second.returncode != 0
    assert "the stack is currently locked by 1 lock(s)" in second.stderr + second.stdout
    # The state is whole: no lock, no pending operation, and the next up has nothing to do.
    assert not lock_rows(pg_stack.stack.name)
    assert not pg_stack.stack.export_stack().deployment.get("pending_operations")
    assert set(pg_stack.stack.up(refresh=True).summary.resource_changes) == {"same"}
    assert vault().read(f"{pg_stack.mount}/roles/{pg_stack.role_name}")["data"]["default_ttl"] == 7200


def test_a_killed_up_make_up_clears_the_stale_lock_never_a_live_one(pg_stack: ProgramStack):
    env = {**os.environ, **pg_stack.stack.workspace.env_vars}
    process = subprocess.Popen(
        ["pulumi", "up", "--yes", "--skip-preview", "--stack", pg_stack.stack.name],
        cwd=pg_stack.project_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    created = 0
    for line in process.stdout:
        if "pulumi:pulumi:Stack" in line and lock_rows(pg_stack.stack.name):
            # A live lock: recover_stack leaves it alone.
            recover = subprocess.run(
                [
                    str(REPO / "venv/bin/python"),
                    str(REPO / "local/recover_stack.py"),
                    pg_stack.stack.name,
                    str(pg_stack.project_dir),
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert recover.returncode == 0 and "clearing the lock" not in recover.stderr, recover.stderr
            assert lock_rows(pg_stack.stack.name)
        created += " created" in line
        if created >= 8:
            os.killpg(process.pid, signal.SIGKILL)
            break
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert lock_rows(pg_stack.stack.name), "a killed pulumi leaves its lock row behind"

    make = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "up",
            f"STACK={pg_stack.stack.name}",
            f"PROJECT={pg_stack.project_dir}",
            f"SMOKE_ROLE={pg_stack.role_name}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert make.returncode == 0, make.stdout[-3000:] + make.stderr[-3000:]
    assert "no longer runs; clearing the lock" in make.stderr
    assert "smoke check: PASSED" in make.stdout
    assert not lock_rows(pg_stack.stack.name)
    deployment = pg_stack.stack.export_stack().deployment
    assert not deployment.get("pending_operations")
    urns = [r["urn"] for r in deployment["resources"]]
    assert len(urns) == len(set(urns))
    assert set(pg_stack.stack.preview(refresh=True).change_summary) == {"same"}


# --- 3. the program's PostgreSQL login: issued and rotated by Vault -------------


@pytest.mark.both_servers
def test_plain_destroy_works_after_vault_rotated_the_deployer_password(new_stack: ProgramStack):
    new_stack.stack.up()
    old_password = deployer_password()
    root = vault()
    root.write("pgcreds-platform/rotate-role/deployer")
    try:
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(
                host="127.0.0.1",
                port=int(os.environ["PGPORT"]),
                dbname=new_stack.database,
                user=DEPLOYER,
                password=old_password,
                connect_timeout=10,
            ).close()
    finally:
        # The session of every later run of this test process reads the new password
        # (the same pgpass file, rewritten; a new state login with it).
        renewed = subprocess.run(
            [str(REPO / "venv/bin/python"), "-m", "deployer.session", "--renew"],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        os.environ.update(session_exports(renewed))
    assert deployer_password() != old_password
    # `pulumi destroy` without --run-program: the providers as the state recorded
    # them, and no password in that record, so the new session's login is used.
    destroy = new_stack.run("destroy", "--yes", "--skip-preview", "--non-interactive")
    assert " deleted" in destroy and "error" not in destroy.lower()
    with admin_connect() as admin:
        left = admin.execute(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (new_stack.program_roles,)
        ).fetchall()
    assert left == [] and f"{new_stack.mount}/" not in root.sys.list_mounted_secrets_engines()["data"]


# --- 4. CI's identity: GitHub's OIDC token through Vault's jwt auth -------------


@pytest.mark.both_servers
def test_jwt_roles_bind_the_repository_and_the_ref_and_preview_cannot_write():
    preview = ci_login(f"pgcreds-preview-{CI_STACK}", github_token(ref="refs/pull/7/merge"))
    deploy = ci_login(f"pgcreds-deploy-{CI_STACK}", github_token())
    try:
        looked_up = preview.auth.token.lookup_self()["data"]
        assert sorted(looked_up["policies"]) == ["default", f"pgcreds-preview-{CI_STACK}"]
        assert 0 < looked_up["ttl"] <= 3600
        assert preview.read("pgcreds-platform/creds/state-read")["data"]["username"].startswith("v-")
        writes = {
            "a state login that may write": lambda: preview.read("pgcreds-platform/creds/state-write"),
            "encrypt with the stack's key": lambda: preview.write(
                f"transit/encrypt/pgcreds-{CI_STACK}", plaintext=base64.b64encode(b"x").decode()
            ),
            "rotate the deployer's password": lambda: preview.write("pgcreds-platform/rotate-role/deployer"),
            "a Vault connection": lambda: preview.write(f"{CI_MOUNT}/config/x", plugin_name="x"),
            "a policy": lambda: preview.sys.create_or_update_acl_policy(f"pgcreds-{CI_MOUNT}-x", 'path "x" {}'),
            "a mount": lambda: preview.sys.enable_secrets_engine("kv", path=CI_MOUNT),
            "another stack's key": lambda: preview.write("transit/decrypt/pgcreds-dev", ciphertext="vault:v1:x"),
        }
        for what, attempt in writes.items():
            with pytest.raises(hvac.exceptions.Forbidden):
                attempt()
                pytest.fail(f"the preview token could get {what}")
        assert sorted(deploy.auth.token.lookup_self()["data"]["policies"]) == ["default", f"pgcreds-deploy-{CI_STACK}"]
        assert deploy.write(f"transit/encrypt/pgcreds-{CI_STACK}", plaintext=base64.b64encode(b"x").decode())["data"][
            "ciphertext"
        ]
        with pytest.raises(hvac.exceptions.Forbidden):
            deploy.write("transit/encrypt/pgcreds-dev", plaintext=base64.b64encode(b"x").decode())
    finally:
        preview.auth.token.revoke_self()
        deploy.auth.token.revoke_self()

    refused = {
        "a pull request's ref on the deploy role": (
            f"pgcreds-deploy-{CI_STACK}",
            github_token(ref="refs/pull/7/merge"),
        ),
        "another branch on the deploy role": (f"pgcreds-deploy-{CI_STACK}", github_token(ref="refs/heads/feature")),
        "another repository, deploy": (f"pgcreds-deploy-{CI_STACK}", github_token(repository="someone/fork")),
        "another repository, preview": (f"pgcreds-preview-{CI_STACK}", github_token(repository="someone/fork")),
        "another audience": (f"pgcreds-preview-{CI_STACK}", github_token(audience="sigstore")),
    }
    for what, (role, token) in refused.items():
        with pytest.raises((hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden)):
            ci_login(role, token)
            pytest.fail(f"Vault accepted {what}")
    # A token signed by another key (not GitHub's) is refused as well.
    forged = github_token().rsplit(".", 1)[0] + "." + b64url(b"\0" * 256)
    with pytest.raises((hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden)):
        ci_login(f"pgcreds-preview-{CI_STACK}", forged)


# --- 5. the workflows' scripts, with only a workflow's environment --------------


@pytest.fixture
def ci_project(tmp_path: Path) -> Iterator[tuple[Path, dict, str]]:
    """The program as a workflow checks it out, configured as stack `tests` on the
    local servers (mount citest, which the bootstrap's policies for `tests` name)."""
    suffix = os.urandom(3).hex()
    project = copy_program(tmp_path / "checkout")
    database = f"ci_{suffix}"
    with admin_connect() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(DEPLOYER)))
    roles = [
        {
            "name": f"c{suffix}-readwrite",
            "tables": ["weekly_metrics_reporting"],
            "access": "readwrite",
            "defaultTtl": "1h",
            "maxTtl": "24h",
        }
    ]
    # Not the dev environment: the policy pack and the settings want TLS, verified.
    config = {
        "postgresPort": os.environ["PGPORT"],
        "postgresDatabase": database,
        "postgresAdminUser": DEPLOYER,
        "postgresSslMode": "verify-full",
        "postgresSslRootCert": os.environ["PGCREDS_TEST_CA"],
        "vaultAddress": os.environ["VAULT_ADDR"],
        "vaultMountPath": CI_MOUNT,
        "tableOwnerRole": f"ci_{suffix}_owner",
        "vaultAdminRole": f"ci_{suffix}_vault_admin",
        "sampleData": "true",
        "keepTablesOnDestroy": "false",
        "roles": roles,
    }
    # As the repository would hold it: the settings and the stack's secrets provider.
    (project / f"Pulumi.{CI_STACK}.yaml").write_text(
        json.dumps(
            {
                "secretsprovider": f"hashivault://pgcreds-{CI_STACK}",
                "config": {f"pgcreds:{k}": v for k, v in config.items()},
            }
        )
    )
    base = workflow_env(project, tmp_path)
    yield project, base, roles[0]["name"]
    root_env = {**os.environ, "PGCREDS_STACK": CI_STACK, "PGCREDS_PROJECT": str(project)}
    subprocess.run(
        ["pulumi", "destroy", "--yes", "--skip-preview", "--stack", CI_STACK, "--non-interactive"],
        cwd=project,
        env=root_env,
        capture_output=True,
    )
    subprocess.run(
        ["pulumi", "stack", "rm", "--yes", "--force", "--stack", CI_STACK, "--non-interactive"],
        cwd=project,
        env=root_env,
        capture_output=True,
    )
    remove_ci_mount()
    with admin_connect() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        for (role,) in admin.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (f"%{suffix}%",)).fetchall():
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def workflow_env(project: Path, tmp_path: Path) -> dict[str, str]:
    """What a workflow job has: the runner's PATH and CLI, and the job's variables for
    stack `tests` checked out at `project` (no token yet: `run_script` logs in)."""
    toolchain = sourced_env("toolchain/env.sh")
    keep = ("PATH", "HOME", "PULUMI_HOME", "PULUMI_SKIP_UPDATE_CHECK", "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION")
    return {
        **{key: toolchain[key] for key in keep if key in toolchain},
        "PGCREDS_STACK": CI_STACK,
        "PULUMI_BACKEND_URL": os.environ["PULUMI_BACKEND_URL"],
        "VAULT_ADDR": os.environ["VAULT_ADDR"],
        "VAULT_CACERT": os.environ["VAULT_CACERT"],
        "PGCREDS_PROJECT": str(project),
        "PGCREDS_SESSION_DIR": str(tmp_path / "runner-temp"),
    }


def remove_ci_mount() -> None:
    """Stack `tests`' mount and AppRole method, whatever a test left."""
    client = vault()
    if f"{CI_MOUNT}/" in client.sys.list_mounted_secrets_engines()["data"]:
        client.sys.disable_secrets_engine(CI_MOUNT)
    if f"{CI_MOUNT}-approle/" in client.sys.list_auth_methods()["data"]:
        client.sys.disable_auth_method(f"{CI_MOUNT}-approle")


def run_script(script: str, env: dict, role: str, **extra: str) -> subprocess.CompletedProcess:
    token = ci_login(role, github_token(ref="refs/heads/main" if "deploy" in role else "refs/pull/7/merge")).token
    return subprocess.run(
        [str(REPO / "ci" / script)],
        env={**env, "VAULT_TOKEN": token, **extra},
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


def test_workflow_scripts_deploy_preview_and_refuse_a_concurrent_deploy(ci_project, tmp_path: Path):
    project, env, role_name = ci_project
    deploy_role, preview_role = f"pgcreds-deploy-{CI_STACK}", f"pgcreds-preview-{CI_STACK}"

    runner_temp = Path(env["PGCREDS_SESSION_DIR"])
    deployed = run_script("deploy.sh", env, deploy_role)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    assert list(runner_temp.iterdir()) == []  # the job's session (pgpass file) is gone
    assert "pgcreds-guardrails" in deployed.stdout  # the policy pack ran
    assert "hashivault://pgcreds-tests" in (project / f"Pulumi.{CI_STACK}.yaml").read_text()
    assert vault().read(f"{CI_MOUNT}/roles/{role_name}")["data"]["default_ttl"] == 3600

    # A pull request changes the TTL: the preview shows it, with the policy pack, and changes nothing.
    subprocess.run(
        ["pulumi", "config", "set", "--path", "pgcreds:roles[0].defaultTtl", "2h", "--stack", CI_STACK],
        cwd=project,
        env=os.environ,
        check=True,
        capture_output=True,
    )
    comment = tmp_path / "comment.md"
    previewed = run_script("preview.sh", env, preview_role, PGCREDS_COMMENT_FILE=str(comment))
    assert previewed.returncode == 0, previewed.stdout[-3000:] + previewed.stderr[-3000:]
    body = comment.read_text()
    assert f"`pulumi preview` of stack `{CI_STACK}`: passed" in body and "```diff" in body
    # Above the diff, for the reviewer: the access change in plain words (review/access.py).
    access_lines = body.split("#### `pulumi preview`")[0].splitlines()
    assert access_lines[0] == f"#### Access changes on stack `{CI_STACK}`"
    assert f"- `{role_name}`: credentials last 2h instead of 1h" in access_lines
    assert "- nobody gains `employee_salary`" in access_lines and "```mermaid" in access_lines
    assert "defaultTtl" in body and "3600" in body and "7200" in body
    assert "pgcreds-guardrails" in body  # the policy pack ran
    assert vault().read(f"{CI_MOUNT}/roles/{role_name}")["data"]["default_ttl"] == 3600
    assert list(runner_temp.iterdir()) == []

    # The scheduled drift report, as the preview identity: nothing drifted, nothing changed.
    drifted = run_script("drift.sh", env, preview_role)
    assert drifted.returncode == 0 and "drift: none" in drifted.stdout, drifted.stdout[-3000:] + drifted.stderr[-3000:]
    assert list(runner_temp.iterdir()) == []

    # Two merges at once: the second deploy is refused by the state backend's lock.
    second_checkout = copy_program(tmp_path / "second-checkout")
    shutil.copy(project / f"Pulumi.{CI_STACK}.yaml", second_checkout)
    first = subprocess.Popen(
        [str(REPO / "ci" / "deploy.sh")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**env, "VAULT_TOKEN": ci_login(deploy_role, github_token()).token},
    )
    wait_for(lambda: lock_rows(CI_STACK), what="the first deploy's lock")
    time.sleep(1)
    second = run_script("deploy.sh", {**env, "PGCREDS_PROJECT": str(second_checkout)}, deploy_role)
    first_output, _ = first.communicate(timeout=600)
    assert first.returncode == 0, first_output[-3000:]
    assert second.returncode != 0 and "the stack is currently locked" in second.stdout + second.stderr
    assert list(runner_temp.iterdir()) == []  # after a passing and a failing job alike
    assert vault().read(f"{CI_MOUNT}/roles/{role_name}")["data"]["default_ttl"] == 7200
    assert not lock_rows(CI_STACK)

    destroyed = run_script("destroy.sh", env, deploy_role)
    assert destroyed.returncode == 0, destroyed.stdout[-3000:] + destroyed.stderr[-3000:]
    assert f"{CI_MOUNT}/" not in vault().sys.list_mounted_secrets_engines()["data"]


def test_the_workflow_scripts_name_a_missing_variable(tmp_path: Path):
    result = subprocess.run(
        [str(REPO / "ci" / "deploy.sh")],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2 and "PGCREDS_STACK is not set" in result.stderr


def fake_pulumi(folder: Path, behaviour: str) -> str:
    """A `pulumi` first on PATH that records that it ran, then exits 1 or sleeps."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "pulumi"
    script.write_text(
        "#!/bin/bash\n"
        f"echo \"$PGUSER $PGPASSFILE\" > '{folder}/ran'\n" + ("exit 1\n" if behaviour == "fail" else "sleep 120\n")
    )
    script.chmod(0o755)
    return str(folder)


@pytest.mark.parametrize("ending", ["fail", "TERM"])
def test_a_ci_job_leaves_no_session_behind_however_it_ends(ci_project, tmp_path: Path, ending: str):
    """On a self-hosted runner the next job must not find the deployer's password:
    the job's session folder goes, and the job's token (with the state login it
    read) is revoked, when the job fails and when it is killed."""
    _, env, _ = ci_project
    runner_temp = Path(env["PGCREDS_SESSION_DIR"])
    fake = fake_pulumi(tmp_path / "fake-bin", ending)
    client = ci_login(f"pgcreds-deploy-{CI_STACK}", github_token())
    process = subprocess.Popen(
        [str(REPO / "ci" / "deploy.sh")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env={**env, "PATH": f"{fake}:{env['PATH']}", "VAULT_TOKEN": client.token},
    )
    if ending == "TERM":
        wait_for(lambda: (Path(fake) / "ran").exists(), timeout=60, what="the job to reach pulumi")
        assert [p.name for p in runner_temp.iterdir()][0].startswith("pgcreds-job-")  # its session, while it runs
        os.killpg(process.pid, signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode != 0, output
    ran_as, passfile = (Path(fake) / "ran").read_text().split()
    assert ran_as == DEPLOYER and not Path(passfile).exists()
    assert list(runner_temp.iterdir()) == [], output
    with pytest.raises(hvac.exceptions.Forbidden):
        client.auth.token.lookup_self()  # revoked with its leases


def test_a_ci_job_whose_session_cannot_open_stops_with_the_reason(ci_project, tmp_path: Path):
    _, env, _ = ci_project
    fake = fake_pulumi(tmp_path / "fake-bin", "fail")
    # A token of the default policy alone: it may not read the state login.
    token = vault().auth.token.create(policies=["default"], ttl="5m")["auth"]["client_token"]
    result = subprocess.run(
        [str(REPO / "ci" / "deploy.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env={**env, "PATH": f"{fake}:{env['PATH']}", "VAULT_TOKEN": token},
    )
    assert result.returncode == 3, result.stderr
    assert "deploy session: Vault refused to read pgcreds-platform/creds/state-write" in result.stderr
    assert "::error::the deploy session could not be opened" in result.stderr
    assert not (Path(fake) / "ran").exists()  # Pulumi never ran
    assert list(Path(env["PGCREDS_SESSION_DIR"]).iterdir()) == []
