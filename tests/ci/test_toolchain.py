"""The toolchain: pinned versions, everything the engine needs beside the CLI,
and an environment in which the engine never downloads anything."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def pins() -> dict[str, str]:
    return dict(re.findall(r"^([A-Z_]+)=(\S+)", (REPO / "toolchain" / "pins.env").read_text(), flags=re.M))


def test_toolchain_has_the_pinned_cli_and_the_python_host():
    bin_dir = Path(subprocess.run([str(REPO / "toolchain" / "build.sh")], check=True, capture_output=True,
                                  text=True).stdout.strip().splitlines()[-1])
    for name in ("pulumi", "pulumi-language-python", "pulumi-language-python-exec", "pulumi-resource-pulumi-python"):
        assert (bin_dir / name).is_file(), name
    version = subprocess.run([str(bin_dir / "pulumi"), "version"], check=True, capture_output=True, text=True)
    if "/pg-dynamic-creds/toolchain/" in str(bin_dir):  # built here, not an official installation
        assert version.stdout.strip() == f"v{pins()['PULUMI_VERSION']}"


def test_environment_forbids_downloads_and_uses_a_local_backend():
    env = subprocess.run(["bash", "-c", f". '{REPO}/toolchain/env.sh' 2>/dev/null && env"], check=True,
                         capture_output=True, text=True).stdout
    assert "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true" in env
    assert "PULUMI_SKIP_UPDATE_CHECK=true" in env
    assert re.search(r"^PULUMI_BACKEND_URL=file://", env, flags=re.M)
