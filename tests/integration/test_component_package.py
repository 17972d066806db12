"""The pgcreds package from another language (issue 32, item 3): the Pulumi YAML
program of examples/yaml_program, with the package added from `package/`, run by
the real engine and YAML's language host against the local servers. It goes up,
issues and uses each role's credential through the smoke check, refuses a bad
input by name before anything changes, and is destroyed leaving nothing."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from psycopg import sql

from sourced_env import TEST_SECRETS_PROVIDER, file_backend
from stacks import DEPLOYER, REPO, admin_connect, vault

# Nothing in it depends on the Vault server: it runs once, in the shorter half of `make test`.
pytestmark = pytest.mark.vault_half

EXAMPLE = REPO / "examples" / "yaml_program"


class YamlProgram:
    """A copy of the example whose relative paths name this repository, on a file backend of its own."""

    def __init__(self, folder: Path):
        self.dir = folder / "program"
        shutil.copytree(EXAMPLE, self.dir)
        project = self.dir / "Pulumi.yaml"
        project.write_text(project.read_text().replace("../../", f"{REPO}/"))
        self.env = {**os.environ, **file_backend(folder / "state")}

    def pulumi(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            ["pulumi", *args], cwd=self.dir, env=self.env, capture_output=True, text=True, timeout=300
        )
        if check:
            assert done.returncode == 0, f"pulumi {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done


def test_pulumi_package_add_gives_a_yaml_program_the_package(tmp_path: Path):
    (tmp_path / "Pulumi.yaml").write_text("name: consumer\nruntime: yaml\n")
    added = subprocess.run(
        ["pulumi", "package", "add", str(REPO / "package")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert added.returncode == 0, added.stdout + added.stderr
    assert "Added package pgcreds" in added.stdout + added.stderr
    project = (tmp_path / "Pulumi.yaml").read_text()
    assert f"packages:\n  pgcreds: {REPO / 'package'}\n" in project


def test_a_yaml_program_deploys_uses_and_destroys_the_package(tmp_path: Path):
    application = f"y{secrets.token_hex(3)}"
    mount = f"{application}-database"
    database = f"it_{application}"
    with admin_connect() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(DEPLOYER)))
    with admin_connect(database) as admin:
        # What no credential may read: made outside the package, granted to nobody.
        admin.execute("CREATE TABLE public.employee_salary (emp_no int PRIMARY KEY, salary int NOT NULL)")
    program = YamlProgram(tmp_path)
    # ("dev": the environment where the local servers' sslmode=disable is allowed)
    program.pulumi("stack", "init", "dev", "--secrets-provider", TEST_SECRETS_PROVIDER)
    for key, value in {"application": application, "vaultMountPath": mount, "postgresDatabase": database}.items():
        program.pulumi("config", "set", key, value)
    try:
        up = program.pulumi("up", "--yes", "--skip-preview")
        print(f"\nthe YAML example's `pulumi up`:\n{up.stdout[up.stdout.index('Outputs:') :]}")
        assert re.search(r"\+ \d+ created", up.stdout), up.stdout
        outputs = json.loads(program.pulumi("stack", "output", "--json").stdout)
        assert outputs["vaultMountPath"] == mount
        assert outputs["credentialPaths"] == {
            f"{application}-read": f"{mount}/creds/{application}-read",
            f"{application}-write": f"{mount}/creds/{application}-write",
        }
        assert outputs["appRoles"][f"{application}-read"]["loginPath"] == f"auth/{mount}-approle/login"
        assert outputs["postgres"] | {"sslmode": None} == {
            "host": "127.0.0.1",
            "port": int(os.environ["PGPORT"]),
            "database": database,
            "adminUser": DEPLOYER,
            "sslmode": None,
        }
        types = {r["type"] for r in json.loads(program.pulumi("stack", "export").stdout)["deployment"]["resources"]}
        assert {
            "pgcreds:index:ApplicationDatabase",
            "postgresql:index/schema:Schema",
            "pulumi-python:dynamic/postgresql:Table",
            "vault:database/secretBackendRole:SecretBackendRole",
            "vault:appRole/authBackendRole:AuthBackendRole",
        } <= types

        # Each role's credential, as the smoke check issues and uses it: read may not
        # insert, neither may read employee_salary, revocation ends the session.
        smoke = subprocess.run(
            [
                sys.executable,
                str(REPO / "smoke_check.py"),
                "--outputs",
                "-",
                "--no-sample-rows",
                "--forbidden-table",
                "public.employee_salary",
            ],
            input=json.dumps(outputs),
            cwd=REPO,
            env=program.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        print(smoke.stdout)
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
        assert "INSERT weekly_metrics_reporting denied  PASS" in smoke.stdout
        assert smoke.stdout.count("SELECT public.employee_salary denied") == 2

        program.pulumi("preview", "--expect-no-changes")

        # A bad input stops the preview, named as the component's input, before anything changes.
        program.pulumi("config", "set", "vaultMountPath", "sys/database")
        refused = program.pulumi("preview", check=False)
        assert refused.returncode != 0
        assert "orders.vaultMountPath: 'sys/database' is reserved by Vault" in refused.stdout + refused.stderr
        program.pulumi("config", "set", "vaultMountPath", mount)
        program.pulumi("preview", "--expect-no-changes")
    finally:
        destroyed = program.pulumi("destroy", "--yes", check=False)
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert f"{mount}/" not in vault().sys.list_mounted_secrets_engines()["data"]
    assert f"{mount}-approle/" not in vault().sys.list_auth_methods()["data"]
    with admin_connect(database) as admin:
        left = admin.execute(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE %s OR rolname LIKE %s",
            (f"{application}\\_%", f"v-{application}-%"),
        ).fetchall()
        assert left == []
        assert admin.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (application,)).fetchone() is None
    with admin_connect() as admin:
        admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(database)))


def test_a_role_name_taken_on_the_server_is_refused_naming_the_input(tmp_path: Path):
    application = f"y{secrets.token_hex(3)}"
    with admin_connect() as admin:
        # Someone else's role, by the name the read role's group would have.
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(f"{application}_read")))
    try:
        program = YamlProgram(tmp_path)
        program.pulumi("stack", "init", "dev", "--secrets-provider", TEST_SECRETS_PROVIDER)
        program.pulumi("config", "set", "application", application)
        program.pulumi("config", "set", "vaultMountPath", f"{application}-database")
        refused = program.pulumi("preview", check=False)
        assert refused.returncode != 0
        assert (
            f"PostgreSQL already has a role '{application}_read' that this stack did not create; it is never "
            f"adopted, altered or dropped. Choose another name in orders.roles (the role '{application}-read')."
        ) in refused.stdout + refused.stderr
        assert f"{application}-database/" not in vault().sys.list_mounted_secrets_engines()["data"]
    finally:
        with admin_connect() as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(f"{application}_read")))
