"""The checks a well-kept library runs: ruff's lint rules and its formatter, and mypy,
configured in pyproject.toml, clean on the whole repository (`make test` runs this)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUFF = Path(sys.executable).parent / "ruff"


def test_ruff_finds_nothing():
    checked = subprocess.run(
        [str(RUFF), "check", "--output-format", "concise", "."], cwd=REPO, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_file_is_formatted():
    formatted = subprocess.run([str(RUFF), "format", "--check", "."], cwd=REPO, capture_output=True, text=True)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


def test_mypy_finds_nothing():
    """The type checker, configured in pyproject.toml ([tool.mypy]: the program and its packages)."""
    checked = subprocess.run(
        [str(Path(sys.executable).parent / "mypy"), "--no-error-summary"], cwd=REPO, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
