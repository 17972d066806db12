"""The documentation names only what exists: every `make` target, file path,
setting (`pgcreds:…`) and environment variable a page names is there, and every
setting Pulumi.yaml declares is documented somewhere. Pages: README.md and docs/."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Variables of the tools the project drives (libpq, Pulumi, Vault, GitHub Actions),
# named in the docs but set or read by those tools, not by this repository's code.
TOOLS_VARIABLES = {
    "PGPASSWORD",
    "PGHOST",
    "PGPORT",
    "PGDATABASE",
    "PULUMI_CONFIG_PASSPHRASE",
    "PULUMI_HOME",
    "VAULT_NAMESPACE",
    "RUNNER_TEMP",
    "GITHUB_RUN_ID",
    "XDG_RUNTIME_DIR",
    # the Pulumi CLI's own levers, weighed in the costs
    "PULUMI_SKIP_CHECKPOINTS",
    "PULUMI_PARALLEL_DIFF",
    # the engine's, naming a dynamic provider's virtualenv (the package)
    "PULUMI_RUNTIME_VIRTUALENV",
    # Vault's Go client's, tried for a failover and left out (operations)
    "VAULT_MAX_RETRIES",
    # the vault provider's, for the Vault it runs against (the troubleshooting)
    "VAULT_SERVER_URL",
    "VAULT_SERVER_TOKEN",
}
# Settings the program reads only to refuse them, with the way to do without.
REFUSED_SETTINGS = {"aivenToken", "postgresAdminPassword"}
VARIABLE = re.compile(r"`((?:PGCREDS|PULUMI|VAULT|AIVEN|BAO|PG|UV|GITHUB)_?[A-Z0-9_]*)(?:=[^`]*)?`")
SETTING = re.compile(r"pgcreds:([a-zA-Z]+)\b(?!:)")  # (not a type token, pgcreds:index:…)
MAKE = re.compile(r"`make ([a-z][a-z0-9-]*)")
PATH = re.compile(r"`((?:\.{0,2}/)?(?:[\w.-]+/)+[\w.-]*|[\w.-]+\.(?:py|sh|hcl|yaml|toml|md|lock))`")
LINK = re.compile(r"\]\(([^)#]+)(?:#[^)]*)?\)")
CODE_FILES = [
    path
    for pattern in ("*.py", "*.sh", "Makefile", "*.yml", "*.hcl", "*.toml")
    for path in REPO.rglob(pattern)
    if not {"venv", ".local", "node_modules", ".git"} & set(path.parts)
]


def page_ids() -> list[str]:
    return [str(page.relative_to(REPO)) for page in PAGES]


@pytest.fixture(scope="module")
def code_text() -> str:
    return "\n".join(path.read_text(errors="replace") for path in CODE_FILES)


@pytest.mark.parametrize("page", PAGES, ids=page_ids())
def test_every_make_target_a_page_names_exists(page: Path):
    targets = set(re.findall(r"(?m)^([a-z][a-z0-9-]*):", (REPO / "Makefile").read_text()))
    named = set(MAKE.findall(page.read_text()))
    assert named - targets == set(), f"{page.name} names make targets that Makefile does not have"


@pytest.mark.parametrize("page", PAGES, ids=page_ids())
def test_every_path_a_page_names_exists(page: Path):
    """A path whose first part is one of the repository's (`ci/deploy.sh`), a file name
    with an extension (`deployer.hcl`: anywhere here), and every relative link."""
    text = page.read_text()
    # The repository's own top-level entries (what git tracks): a folder the tools make at
    # run time (.local/, venv/) is not one, and may not be there yet.
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    top = {line.split("/")[0] for line in tracked.splitlines()}
    names = {path.name for path in REPO.rglob("*") if not {"venv", ".git"} & set(path.parts)}
    missing = []
    for found in PATH.findall(text):
        if re.search(r"[<>*{}…$]", found):
            continue  # a pattern or a placeholder
        first = found.removeprefix("./").split("/")[0]
        if "/" in found.strip("/"):
            if first in top and not (REPO / found).exists():
                missing.append(found)
        elif "." in found and not found.startswith("Pulumi.") and found not in names:
            missing.append(found)  # (a stack file Pulumi.<stack>.yaml is the reader's own)
    for link in LINK.findall(text):
        if not re.match(r"^[a-z]+:", link) and not (page.parent / link).exists():
            missing.append(link)
    assert missing == [], f"{page.name} names paths that do not exist: {sorted(set(missing))}"


@pytest.mark.parametrize("page", PAGES, ids=page_ids())
def test_every_setting_a_page_names_exists(page: Path):
    from settings import KEYS

    named = set(SETTING.findall(page.read_text()))
    assert named - set(KEYS) - REFUSED_SETTINGS == set(), f"{page.name} names settings the program does not read"


@pytest.mark.parametrize("page", PAGES, ids=page_ids())
def test_every_environment_variable_a_page_names_exists(page: Path, code_text: str):
    named = {name for name in VARIABLE.findall(page.read_text()) if len(name) > 4 and name.isupper()}
    unknown = {name for name in named - TOOLS_VARIABLES if not re.search(rf"\b{name}\b", code_text)}
    assert unknown == set(), f"{page.name} names environment variables nothing here reads or sets"


def test_every_declared_setting_is_documented():
    declared = set(yaml.safe_load((REPO / "Pulumi.yaml").read_text())["config"])
    text = "\n".join(page.read_text() for page in PAGES)
    undocumented = {key for key in declared if not re.search(rf"`(?:pgcreds:)?{key}`|pgcreds:{key}\b", text)}
    assert undocumented == set(), "settings Pulumi.yaml declares that no page documents"


def test_every_diagram_of_the_docs_parses_with_mermaids_own_parser():
    """GitHub draws a Mermaid block only if Mermaid parses it (the threat model's data
    flow, say): checked with the pinned parser the access report's test uses."""
    blocks = [block for page in PAGES for block in re.findall(r"```mermaid\n(.*?)```", page.read_text(), re.DOTALL)]
    assert blocks, "no diagram found"
    parser = subprocess.run(
        [str(REPO / "toolchain" / "mermaid.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()
    results = subprocess.run(
        ["node", parser], input="\n%%%\n".join(blocks), capture_output=True, text=True, check=True, timeout=120
    ).stdout.splitlines()
    assert results == ["ok"] * len(blocks), [(r, b.splitlines()[0]) for r, b in zip(results, blocks) if r != "ok"]
