"""A copy of the Pulumi program in a temporary folder, for tests to run stacks
on without touching the repository's own stack files."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from sourced_env import REPO

PROGRAM_FILES = (
    "Pulumi.yaml",
    "pyproject.toml",
    "uv.lock",
    "__main__.py",
    "settings.py",
    "preflight.py",
    "tables.py",
    "components",
    "providers",
    "clients",
)


def copy_program(folder: Path, stack_files: Sequence[str] = (), source: Path = REPO) -> Path:
    """Copies the program (and the named Pulumi.<stack>.yaml files) into `folder`,
    with the repository's virtualenv linked in; returns `folder`. `source` may be
    another checkout (the bench's baseline), which may predate the committed uv files."""
    folder.mkdir()
    for name in (*PROGRAM_FILES, *stack_files):
        path = source / name
        if source != REPO and not path.exists():
            # A revision from before the uv files were committed: the repository's go
            # with the repository's virtualenv.
            path = REPO / name
            if not path.exists():
                continue
        (shutil.copytree if path.is_dir() else shutil.copy)(path, folder / name)
    (folder / "venv").symlink_to(REPO / "venv")
    return folder


# Tables made up for tests and the bench: a serial key (so a sequence grant too) and a value.
GENERATED_COLUMNS = '(("id", "serial PRIMARY KEY"), ("value", "INT NOT NULL"))'


def add_tables(folder: Path, names: Sequence[str]) -> None:
    """Adds tables of the generated shape to the copy's tables.py (beside its own)."""
    tables = folder / "tables.py"
    specs = "".join(f'TableSpec(name="{name}", columns={GENERATED_COLUMNS}), ' for name in names)
    tables.write_text(tables.read_text() + f"\nAPP_TABLES = APP_TABLES + ({specs})\n")


def checkout(revision: str, folder: Path) -> Path:
    """The repository's tree at `revision`, unpacked into `folder`."""
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", revision], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def replace_program(folder: Path, source: Path = REPO) -> None:
    """Puts another version of the program (this repository's, by default) in place of
    the copy in `folder`, keeping its stack files and generated tables: an upgrade."""
    tables = (folder / "tables.py").read_text()
    for name in PROGRAM_FILES:
        target = folder / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        path = source / name
        (shutil.copytree if path.is_dir() else shutil.copy)(path, target)
    extra = tables.split("\nAPP_TABLES = APP_TABLES + ", 1)
    if len(extra) == 2:
        (folder / "tables.py").write_text(
            (folder / "tables.py").read_text() + "\nAPP_TABLES = APP_TABLES + " + extra[1]
        )
