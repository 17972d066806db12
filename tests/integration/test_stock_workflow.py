"""The stock Pulumi workflow on a fresh clone (issue 22): `pulumi install` makes the
virtualenv from the committed uv.lock, the same one `make venv` makes, and
`pulumi preview` then works, with the pinned CLI and the local servers and
nothing else of `make`."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

from sourced_env import TEST_SECRETS_PROVIDER, file_backend, sourced_env
from stacks import DEPLOYER, REPO


def packages(python: Path) -> list[str]:
    """`name==version` of every package in a virtualenv, but pip: `python -m venv`
    seeds it (make venv's first step), uv does not, and no dependency is pip."""
    listed = subprocess.run(
        [str(REPO / "venv" / "bin" / "uv"), "pip", "freeze", "--python", str(python)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(line for line in listed.splitlines() if "==" in line and not line.startswith("pip=="))


def test_pulumi_install_then_preview_on_a_fresh_clone(tmp_path: Path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "-c", "advice.detachedHead=false", "clone", "--quiet", str(REPO), str(clone)], check=True)
    assert (clone / "pyproject.toml").exists() and (clone / "uv.lock").exists()
    # The pinned CLI (toolchain/env.sh) and a uv on PATH, as a user of the uv toolchain has one.
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "uv").symlink_to(REPO / "venv" / "bin" / "uv")
    toolchain = sourced_env("toolchain/env.sh")
    env = {
        **os.environ,
        "PATH": f"{tools}:{toolchain['PATH']}",
        "PULUMI_HOME": toolchain["PULUMI_HOME"],
        **file_backend(tmp_path / "state"),
    }
    env.pop("VIRTUAL_ENV", None)

    installed = subprocess.run(["pulumi", "install"], cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    assert packages(clone / "venv" / "bin" / "python") == packages(REPO / "venv" / "bin" / "python")
    assert (
        subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True).stdout
        == ""
    ), "pulumi install changed the checkout"

    suffix = secrets.token_hex(3)
    stack = f"stock{suffix}"
    subprocess.run(
        ["pulumi", "stack", "init", stack, "--secrets-provider", TEST_SECRETS_PROVIDER],
        cwd=clone,
        env=env,
        check=True,
        capture_output=True,
    )
    for key, value in {
        "postgresPort": os.environ["PGPORT"],
        "postgresAdminUser": DEPLOYER,
        "postgresSslMode": "disable",
        "environment": "dev",
        "vaultMountPath": f"stock-{suffix}",
        "tableOwnerRole": f"stock_{suffix}_owner",
        "vaultAdminRole": f"stock_{suffix}_vault",
        "roles": json.dumps(
            [{"name": f"s{suffix}-readwrite", "tables": ["weekly_metrics_reporting"], "access": "readwrite"}]
        ),
    }.items():
        subprocess.run(
            ["pulumi", "config", "set", f"pgcreds:{key}", value, "--stack", stack],
            cwd=clone,
            env=env,
            check=True,
            capture_output=True,
        )
    preview = subprocess.run(
        ["pulumi", "preview", "--stack", stack, "--non-interactive"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert preview.returncode == 0, preview.stdout[-3000:] + preview.stderr[-3000:]
    assert "to create" in preview.stdout and "vault:index:Mount" in preview.stdout
