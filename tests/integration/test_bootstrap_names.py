"""The bootstrap matches every name that goes into a Vault policy path whole, and
refuses a bad one before anything is changed: no policy, jwt role, transit key,
mount, auth method or PostgreSQL role differs afterwards."""

from __future__ import annotations

import os
import subprocess

import hvac.exceptions
import pytest

from stacks import REPO, admin_connect, vault

GOOD = ["--pg-host", "127.0.0.1", "--repository", "local/pg-dynamic-creds", "--app-database", "postgres"]

BAD_ARGUMENTS = {
    "a mount wildcard (every mount)": ["--stack", "wild:+"],
    "an application wildcard (every application named bill…)": ["--stack", "star:database:bill*"],
    "a stack wildcard": ["--stack", "*"],
    "a / in the stack": ["--stack", "a/b"],
    "a / in the mount": ["--stack", "dev:data/base"],
    "a space": ["--stack", "my stack"],
    "a quote": ["--stack", 'dev"x'],
    "a single quote in the application": ["--stack", "dev:database:bi'll"],
    "a control character": ["--stack", "dev\x07"],
    "a newline in the mount": ["--stack", "dev:data\nbase"],
    "the transit mount": ["--stack", "dev:transit"],
    "the deploy path's own mount": ["--stack", "dev:pgcreds-platform"],
    "an application with a -": ["--stack", "dev:database:bill-ing"],
    "a wildcard platform stack": ["--stack", "billing:database:billing:pl*"],
    "a platform stack without an application": ["--stack", "billing:database::platform"],
    "a fifth field": ["--stack", "billing:database:billing:platform:x"],
    "a glob in the deploy ref": ["--stack", "dev", "--deploy-ref", "refs/heads/*"],
    "a repository with a space": ["--stack", "dev", "--repository", "local/pg dynamic"],
    "a database with a quote": ["--stack", "dev", "--app-database", 'x"; DROP'],
}


def snapshot() -> dict[str, object]:
    """What a bootstrap could change, as the operator sees it."""
    client = vault()

    def listed(path: str) -> list[str]:
        try:
            return sorted(client.list(path)["data"]["keys"])
        except (hvac.exceptions.InvalidPath, TypeError):
            return []

    with admin_connect() as admin:
        roles = admin.execute(
            "SELECT rolname, rolcanlogin, rolcreaterole, rolpassword IS NULL FROM pg_authid ORDER BY rolname"
        ).fetchall()
        members = admin.execute(
            "SELECT roleid::regrole::text, member::regrole::text, admin_option FROM pg_auth_members ORDER BY 1, 2"
        ).fetchall()
    return {
        "policies": sorted(client.sys.list_acl_policies()["data"]["keys"]),
        "policy texts": {
            name: client.sys.read_acl_policy(name)["data"]["policy"]
            for name in client.sys.list_acl_policies()["data"]["keys"]
            if name.startswith("pgcreds-")
        },
        "jwt roles": listed("auth/jwt/role"),
        "transit keys": listed("transit/keys"),
        "mounts": sorted(client.sys.list_mounted_secrets_engines()["data"]),
        "auth methods": sorted(client.sys.list_auth_methods()["data"]),
        "platform roles": listed("pgcreds-platform/roles"),
        "pg roles": roles,
        "pg memberships": members,
    }


@pytest.mark.parametrize("what", BAD_ARGUMENTS)
def test_a_bad_name_is_refused_before_anything_changes(what: str):
    arguments = list(GOOD)
    extra = BAD_ARGUMENTS[what]
    for flag in ("--repository", "--app-database"):  # a bad one replaces the good one
        if flag in extra:
            index = arguments.index(flag)
            del arguments[index : index + 2]
    before = snapshot()
    result = subprocess.run(
        [
            str(REPO / "venv/bin/python"),
            "-m",
            "deployer.bootstrap",
            *arguments,
            *extra,
            "--password-stdin",
            "--pg-port",
            os.environ["PGPORT"],
        ],
        cwd=REPO,
        input=open(os.environ["PGCREDS_SUPERUSER_PASSWORD_FILE"]).read(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0, result.stderr
    flag = [part for part in extra if part.startswith("--")][-1]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"bootstrap: {flag} ") and message.endswith("Nothing was changed."), result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot() == before
