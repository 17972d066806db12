"""local/recover_stack.py's repair of what a killed run leaves on the file backend."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("recover_stack", REPO / "local" / "recover_stack.py")
recover_stack = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recover_stack)


def test_an_empty_metadata_sidecar_left_by_a_kill_is_removed_and_nothing_else(tmp_path: Path):
    stacks = tmp_path / ".pulumi" / "stacks" / "pgcreds"
    stacks.mkdir(parents=True)
    (stacks / "dev.json").write_text('{"version": 3}')
    (stacks / "dev.json.attrs").write_text("")  # truncated, never written
    (stacks / "dev.json.bak.attrs").write_text('{"user.cache_control": ""}')
    (stacks / "other.json.attrs").write_text("")  # another stack's: not ours to touch
    removed = recover_stack.remove_empty_attributes(f"file://{tmp_path}", "pgcreds", "dev")
    assert removed == [stacks / "dev.json.attrs"]
    assert sorted(p.name for p in stacks.iterdir()) == ["dev.json", "dev.json.bak.attrs", "other.json.attrs"]
    assert recover_stack.remove_empty_attributes("postgres://db/pulumi_state", "pgcreds", "dev") == []
