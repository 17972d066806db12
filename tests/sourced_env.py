"""The environment a shell file of the project sets up, for tests to adopt."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sourced_env(script: str) -> dict[str, str]:
    """Every variable after `. <script>` (a path relative to the repository) in bash."""
    dump = subprocess.run(["bash", "-c", f". '{REPO / script}' >/dev/null 2>&1 && env -0"], check=True,
                          capture_output=True).stdout
    return dict(entry.decode().split("=", 1) for entry in dump.split(b"\0") if b"=" in entry)
