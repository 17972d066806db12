"""The threat model stays true to the code: every test it names exists, and
every identity of the access matrix is in its tables."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
MODEL = (REPO / "docs" / "threat-model.md").read_text()


def functions_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_every_test_the_threat_model_names_exists():
    named = re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)`", MODEL)
    # `::test_x` right after a full reference is in the same file.
    for match in re.finditer(r"`(tests/[\w/]+\.py)::test_\w+`((?:,\s*`::test_\w+`)+)", MODEL):
        named += [(match.group(1), name) for name in re.findall(r"`::(test_\w+)`", match.group(2))]
    assert len(named) >= 10
    for path, name in named:
        assert (REPO / path).is_file(), path
        assert name in functions_in(REPO / path), f"{path}::{name}"


def test_every_threat_names_its_test():
    rows = [line for line in MODEL.splitlines() if re.match(r"\| T\d+ \|", line)]
    assert len(rows) >= 8
    for row in rows:
        assert "::test_" in row.split("|")[-2], row


def test_every_identity_of_the_access_matrix_is_in_the_threat_model():
    matrix = yaml.safe_load((REPO / "security" / "access.yaml").read_text())
    for kind in ("vault", "postgres"):
        for identity in matrix[kind]["identities"]:
            assert f"| {identity} |" in MODEL, identity
