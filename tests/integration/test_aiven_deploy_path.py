"""The Aiven API token on the deploy path: the long-lived token lives in Vault
alone (the bootstrap puts it there), each run's deploy session mints a token of
its own from it (10 minutes after its last use, Aiven's shortest), and the run's
end revokes it. Against the Aiven stand-in, whose tokens expire and are revoked
as Aiven's are, and the local Vault; the workflows' scripts run with only a
workflow's environment."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import hvac.exceptions
import pytest
from psycopg import sql
from test_deploy_path import (
    CI_MOUNT,
    CI_STACK,
    ci_login,
    github_token,
    remove_ci_mount,
    run_script,
    workflow_env,
)

from aiven_standin.server import AivenStandIn
from clients import aiven_api
from clients.tls import vault_tls_verify
from deployer import AIVEN_MOUNT, AIVEN_SECRET
from program_copy import copy_program
from sourced_env import session_exports, superuser_password
from stacks import PROJECT, REPO, admin_connect, vault

# In the HashiCorp Vault half (`make test-vault`, beside the main run): the token path
# is Vault's KV and Aiven's API, the same on both servers.
pytestmark = pytest.mark.vault_half


def bootstrap(*extra: str) -> subprocess.CompletedProcess:
    """The bootstrap as local/bootstrap.sh runs it (the local servers' stacks), with more options."""
    args = [
        "--pg-host", "127.0.0.1",
        "--pg-port", os.environ["PGPORT"],
        "--pg-sslmode", os.environ["PGCREDS_PG_SSLMODE"],
        "--pg-sslrootcert", os.environ["PGCREDS_TEST_CA"],
        "--app-database", "postgres",
        "--stack", "dev", "--stack", f"{CI_STACK}:{CI_MOUNT}", "--stack", f"acme:{CI_MOUNT}:acme:{CI_STACK}",
        "--repository", "local/pg-dynamic-creds",
        "--jwt-pubkey", str(Path(os.environ["PGCREDS_LOCAL_DIR"]) / "ci-oidc" / "issuer.pub.pem"),
    ]  # fmt: skip
    return subprocess.run(
        [str(REPO / "venv" / "bin" / "python"), "-m", "deployer.bootstrap", *args, *extra],
        cwd=REPO,
        env={**os.environ, "PGCREDS_BOOTSTRAP_ADMIN_PASSWORD": superuser_password()},
        capture_output=True,
        text=True,
        timeout=120,
    )


def stored_token() -> dict | None:
    try:
        return vault().secrets.kv.v2.read_secret_version(
            path=AIVEN_SECRET, mount_point=AIVEN_MOUNT, raise_on_deleted_version=True
        )["data"]["data"]
    except hvac.exceptions.InvalidPath:
        return None


@pytest.fixture(scope="module")
def token_in_vault(stand_in: AivenStandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The bootstrap run with --aiven-token-file: refused for a token Aiven refuses,
    then done with the stand-in's long-lived token."""
    before = stored_token()
    bad = tmp_path_factory.mktemp("bad") / "token"
    bad.write_text("not-a-token\n")
    refused = bootstrap("--aiven-token-file", str(bad), "--aiven-api-url", stand_in.url)
    assert refused.returncode != 0 and "--aiven-token-file: Aiven refused GET /v1/project: Invalid token" in (
        refused.stderr
    ), refused.stderr
    assert "Nothing was changed" in refused.stderr and stored_token() == before
    good = tmp_path_factory.mktemp("good") / "token"
    good.write_text(stand_in.token + "\n")
    done = bootstrap("--aiven-token-file", str(good), "--aiven-api-url", stand_in.url)
    assert done.returncode == 0, done.stderr
    assert stand_in.token not in done.stdout + done.stderr
    yield
    vault().secrets.kv.v2.delete_metadata_and_all_versions(path=AIVEN_SECRET, mount_point=AIVEN_MOUNT)


def test_only_a_deploy_identity_of_a_stack_that_calls_aiven_may_read_the_long_lived_token(
    token_in_vault: None, stand_in: AivenStandIn
):
    assert stored_token() == {"token": stand_in.token, "api_url": stand_in.url}
    path = f"{AIVEN_MOUNT}/data/{AIVEN_SECRET}"
    deploy = ci_login(f"pgcreds-deploy-{CI_STACK}", github_token())
    assert deploy.read(path)["data"]["data"]["token"] == stand_in.token
    # A pull request's preview runs its own code: it may not read it. Nor may an
    # application stack's deployer (application stacks never call Aiven).
    preview = ci_login(f"pgcreds-preview-{CI_STACK}", github_token(ref="refs/pull/7/merge"))
    application = ci_login("pgcreds-deploy-acme", github_token())
    for client in (preview, application):
        with pytest.raises(hvac.exceptions.Forbidden):
            client.read(path)
    for client in (deploy, preview, application):
        client.auth.token.revoke_self()


def session(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(REPO / "venv" / "bin" / "python"), "-m", "deployer.session", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_deploy_session_mints_the_runs_token_and_its_end_revokes_it(
    token_in_vault: None, stand_in: AivenStandIn, tmp_path: Path
):
    child = vault().auth.token.create(ttl="10m")["auth"]["client_token"]
    env = {**os.environ, "VAULT_TOKEN": child, "PGCREDS_SESSION_DIR": str(tmp_path), "PGCREDS_AIVEN": "true"}
    opened = session(env)
    assert opened.returncode == 0, opened.stderr
    exported = session_exports(opened.stdout)
    token = exported["AIVEN_TOKEN"]
    minted = stand_in.access_tokens[token]
    # The printed lines never hold it: the shell reads it from the session's private file.
    assert token not in opened.stdout + opened.stderr and stand_in.token not in opened.stdout + opened.stderr
    token_file = next(tmp_path.glob("pgcreds-session-*/aiven-token"))
    assert token_file.stat().st_mode & 0o777 == 0o600 and f"cat {token_file}" in opened.stdout
    assert exported["AIVEN_WEB_URL"] == stand_in.url and exported["PGCREDS_AIVEN_TOKEN_PREFIX"] == minted.prefix
    assert (minted.max_age_seconds, minted.extend_when_used) == (aiven_api.MIN_TOKEN_SECONDS, True)
    assert minted.description.startswith("pg-dynamic-creds deploy session")
    aiven_api.check_token(stand_in.url, token)  # a working token

    # A preview gets none, with the reason.
    preview = session(env, "--read-only")
    assert preview.returncode != 0 and "a preview gets no Aiven token" in preview.stderr

    # The job's end revokes it (and the job's Vault token).
    ended = session({**env, **exported}, "--end")
    assert ended.returncode == 0, ended.stderr
    assert minted.revoked
    with pytest.raises(aiven_api.AivenApiError, match=r"Invalid token \(HTTP 403\)"):
        aiven_api.check_token(stand_in.url, token)
    with pytest.raises(hvac.exceptions.Forbidden):
        hvac.Client(url=os.environ["VAULT_ADDR"], token=child, verify=vault_tls_verify()).lookup_token()


def test_a_minted_token_dies_ten_minutes_after_its_last_use(stand_in: AivenStandIn):
    token = aiven_api.mint_token(stand_in.url, stand_in.token, "expiry test").full_token
    try:
        stand_in.clock_offset += 500
        aiven_api.check_token(stand_in.url, token)  # used: its ten minutes start again
        stand_in.clock_offset += 500
        aiven_api.check_token(stand_in.url, token)  # 1,000 s after minting, still alive
        stand_in.clock_offset += aiven_api.MIN_TOKEN_SECONDS + 1
        with pytest.raises(aiven_api.AivenApiError, match="Invalid token"):
            aiven_api.check_token(stand_in.url, token)
    finally:
        stand_in.clock_offset = 0
    # Aiven's bounds on a token's life are the stand-in's too.
    for max_age in (599, 315360001):
        with pytest.raises(aiven_api.AivenApiError, match="max_age_seconds must be between 600 and 315360000"):
            aiven_api.mint_token(stand_in.url, stand_in.token, "bounds", max_age_seconds=max_age)


@pytest.fixture
def aiven_ci_project(tmp_path: Path, stand_in: AivenStandIn) -> Iterator[tuple[Path, dict]]:
    """The program as a workflow checks it out, its stack `tests` in aiven mode."""
    suffix = os.urandom(3).hex()
    project = copy_program(tmp_path / "checkout")
    config = {
        "postgresMode": "aiven",
        "aivenProject": PROJECT,
        "aivenCloud": "google-europe-west1",
        "aivenPlan": "startup-4",
        "aivenServiceName": f"pg-ci-{suffix}",
        "aivenPgVersion": "16",
        "vaultAddress": os.environ["VAULT_ADDR"],
        "vaultMountPath": CI_MOUNT,
        "tableOwnerRole": f"ci_{suffix}_owner",
        "vaultAdminRole": f"ci_{suffix}_vault_admin",
        "keepTablesOnDestroy": "false",
        "roles": [
            {
                "name": f"c{suffix}-readwrite",
                "tables": ["weekly_metrics_reporting"],
                "access": "readwrite",
                "defaultTtl": "1h",
                "maxTtl": "24h",
            }
        ],
    }
    # As the repository holds it: YAML, one setting per line (JSON values are YAML too).
    (project / f"Pulumi.{CI_STACK}.yaml").write_text(
        f"secretsprovider: hashivault://pgcreds-{CI_STACK}\nconfig:\n"
        + "".join(f"  pgcreds:{key}: {json.dumps(value)}\n" for key, value in config.items())
    )
    # Only a workflow's variables: no AIVEN_TOKEN, no AIVEN_WEB_URL (the session exports both).
    env = workflow_env(project, tmp_path)
    yield project, env
    # The service is protected (outside dev): its state goes, and the stand-in deletes the service.
    subprocess.run(
        ["pulumi", "stack", "rm", "--yes", "--force", "--stack", CI_STACK, "--non-interactive"],
        cwd=project,
        env={**os.environ, "PGCREDS_STACK": CI_STACK},
        capture_output=True,
    )
    for service in list(stand_in.services.values()):
        service.termination_protection = False
        stand_in.delete(service)
    remove_ci_mount()
    with admin_connect() as admin:
        for (role,) in admin.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (f"%{suffix}%",)).fetchall():
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_a_ci_run_deploys_with_its_own_token_and_leaves_none_behind(
    token_in_vault: None, stand_in: AivenStandIn, aiven_ci_project: tuple[Path, dict], tmp_path: Path
):
    project, env = aiven_ci_project
    runner_temp = Path(env["PGCREDS_SESSION_DIR"])
    before, calls_before = set(stand_in.access_tokens), len(stand_in.authorized)
    deployed = run_script("deploy.sh", env, f"pgcreds-deploy-{CI_STACK}")
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    (service,) = stand_in.services.values()
    minted = [stand_in.access_tokens[t] for t in set(stand_in.access_tokens) - before]
    assert len(minted) == 1 and minted[0].revoked, minted  # the run's own token, revoked at its end
    assert f"stack {CI_STACK}" in minted[0].description
    with pytest.raises(aiven_api.AivenApiError, match="Invalid token"):
        aiven_api.check_token(stand_in.url, minted[0].full_token)
    # Every call the plugin made used the run's token; the long-lived one only minted it.
    run_calls = stand_in.authorized[calls_before:]
    assert [c for c in run_calls if c[2] == "long-lived" and c[1] != "/v1/access_token"] == [], run_calls
    assert any(kind == "minted" for _, _, kind in run_calls)

    # A pull request's preview is not run, and says why; no token is minted for it.
    comment = tmp_path / "comment.md"
    previewed = run_script("preview.sh", env, f"pgcreds-preview-{CI_STACK}", PGCREDS_COMMENT_FILE=str(comment))
    assert previewed.returncode == 0 and "not previewed" in previewed.stdout, previewed.stderr
    assert "gets no Aiven token" in comment.read_text()

    # The next merge's deploy (termination protection is on, as the policy pack wants
    # outside dev: CI never destroys the service) mints a token of its own.
    again = run_script("deploy.sh", env, f"pgcreds-deploy-{CI_STACK}")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert stand_in.services == {service.name: service} and stand_in.unknown == []
    minted = [stand_in.access_tokens[t] for t in set(stand_in.access_tokens) - before]
    assert len(minted) == 2 and all(token.revoked for token in minted)

    # No token in the runs' logs, the checkout or the runner's temporary folder.
    secrets = [stand_in.token, *(token.full_token for token in minted), service.admin_password]
    logs = "".join(run.stdout + run.stderr for run in (deployed, previewed, again))
    assert not [secret for secret in secrets if secret in logs]
    assert list(runner_temp.iterdir()) == []
    for path in project.rglob("*"):
        if path.is_file() and "venv" not in path.parts:
            text = path.read_bytes()
            assert not [secret for secret in secrets if secret.encode() in text], path
