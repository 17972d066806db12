"""The toolchain: pinned versions, everything the engine needs beside the CLI,
and an environment in which the engine never downloads anything."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from sourced_env import sourced_env

REPO = Path(__file__).resolve().parents[2]


def pins() -> dict[str, str]:
    return dict(re.findall(r"^([A-Z_]+)=(\S+)", (REPO / "toolchain" / "pins.env").read_text(), flags=re.M))


def test_toolchain_has_the_pinned_cli_and_the_python_host():
    bin_dir = Path(
        subprocess.run([str(REPO / "toolchain" / "build.sh")], check=True, capture_output=True, text=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    for name in ("pulumi", "pulumi-language-python", "pulumi-language-python-exec", "pulumi-resource-pulumi-python"):
        assert (bin_dir / name).is_file(), name
    version = subprocess.run([str(bin_dir / "pulumi"), "version"], check=True, capture_output=True, text=True)
    if "/pg-dynamic-creds/toolchain/" in str(bin_dir):  # built here, not an official installation
        assert version.stdout.strip() == f"v{pins()['PULUMI_VERSION']}"


def test_environment_forbids_downloads_and_uses_a_local_backend():
    env = sourced_env("toolchain/env.sh", unset=("PULUMI_BACKEND_URL",))
    assert env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] == "true"
    assert env["PULUMI_SKIP_UPDATE_CHECK"] == "true"
    assert env["PULUMI_BACKEND_URL"].startswith("file://")
    state = Path(env["PULUMI_BACKEND_URL"].removeprefix("file://"))
    assert state.stat().st_mode & 0o077 == 0, "a local state folder must not be readable by others"


def test_language_host_installs_dependencies_and_reports_itself(tmp_path: Path):
    """`pulumi install` and `pulumi about` go through our Python language host."""
    (tmp_path / "Pulumi.yaml").write_text(
        "name: hosttest\nruntime:\n  name: python\n  options:\n    toolchain: pip\n    virtualenv: venv\n"
    )
    (tmp_path / "requirements.txt").write_text("six==1.16.0\n")
    (tmp_path / "__main__.py").write_text("import pulumi\n")
    env = {**sourced_env("toolchain/env.sh"), "PULUMI_BACKEND_URL": f"file://{tmp_path}"}
    subprocess.run(["pulumi", "install"], cwd=tmp_path, env=env, check=True, capture_output=True)
    assert (tmp_path / "venv" / "bin" / "python").exists()
    six = subprocess.run(
        [str(tmp_path / "venv" / "bin" / "python"), "-c", "import six; print(six.__version__)"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert six.stdout.strip() == "1.16.0"
    about = subprocess.run(["pulumi", "about"], cwd=tmp_path, env=env, capture_output=True, text=True).stdout
    if "/pg-dynamic-creds/toolchain/" in env["PATH"].split(":")[0]:
        assert re.search(rf"language\s+python\s+{re.escape(pins()['PULUMI_LANGUAGE_PYTHON_VERSION'])}", about), about
    assert "six" in about  # the program's dependencies, listed by the host


def bundles_copy(tmp_path: Path) -> Path:
    """A plugin folder like ../shared/plugins, with links to the real bundles."""
    shared = REPO.parent / "shared" / "plugins"
    folder = tmp_path / "plugins"
    folder.mkdir()
    for item in shared.iterdir():
        (folder / item.name).symlink_to(item)
    return folder


def build_with(plugins: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """build.sh with another plugin folder and an empty cache (nothing on PATH but the system)."""
    env = {
        "PATH": f"{Path(shutil.which('go')).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "PGCREDS_PLUGINS_DIR": str(plugins),
        "GOCACHE": subprocess.run(["go", "env", "GOCACHE"], capture_output=True, text=True).stdout.strip(),
    }
    return subprocess.run([str(REPO / "toolchain" / "build.sh")], env=env, capture_output=True, text=True, timeout=60)


def test_a_bundle_that_does_not_match_the_manifest_stops_the_build(tmp_path: Path):
    plugins = bundles_copy(tmp_path)
    bad = plugins / f"pulumi-resource-vault-v{pins()['PROVIDER_VAULT_VERSION']}-linux-amd64.tar.xz"
    bad.unlink()
    bad.write_bytes(b"not the official plugin")
    result = build_with(plugins, tmp_path)
    assert result.returncode != 0
    assert f"plugin bundle {bad} does not match MANIFEST.tsv" in result.stderr, result.stderr
    assert "building pulumi" not in result.stderr  # checked before anything is built


def test_a_missing_bundle_stops_the_build(tmp_path: Path):
    plugins = bundles_copy(tmp_path)
    missing = plugins / f"pulumi-resource-random-v{pins()['PROVIDER_RANDOM_VERSION']}-linux-amd64.tar.xz"
    missing.unlink()
    result = build_with(plugins, tmp_path)
    assert result.returncode != 0
    assert f"plugin bundle missing: {missing}" in result.stderr, result.stderr


def test_plugins_are_installed_at_the_pinned_versions():
    env = sourced_env("toolchain/env.sh")
    listing = subprocess.run(
        ["pulumi", "plugin", "ls", "--json"], env=env, check=True, capture_output=True, text=True
    ).stdout
    installed = {(p["kind"], p["name"], p["version"]) for p in json.loads(listing)}
    for name in ("vault", "postgresql", "random", "aiven"):
        assert ("resource", name, pins()[f"PROVIDER_{name.upper()}_VERSION"]) in installed, installed
    assert env["PULUMI_HOME"].startswith(str(Path.home() / ".cache")) or "XDG_CACHE_HOME" in env
