"""Clears the lock that a killed `pulumi up` leaves on a stack of a file (diy)
backend, so that the next `make up` goes on by itself:

    python local/stale_lock.py STACK [PROJECT_DIR]

A file backend locks a stack with `.pulumi/locks/organization/<project>/<stack>/<id>.json`
({"pid", "hostname", ...}) and removes the file when the command ends; a process
killed with SIGKILL never does. A lock is cleared (with `pulumi cancel`) only if
it was taken on this machine by a process that no longer runs; a live lock, or
one from another machine, is left for Pulumi to report. Other backends keep
their own locks and are not touched.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path


def project_name(project_dir: Path) -> str:
    match = re.search(r"^name:\s*(\S+)", (project_dir / "Pulumi.yaml").read_text(), re.MULTILINE)
    if not match:
        raise SystemExit(f"stale_lock: no project name in {project_dir / 'Pulumi.yaml'}")
    return match.group(1)


def process_runs(pid: int) -> bool:
    """Alive and a pulumi process (a recycled PID that is something else does not count)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"pulumi" in cmdline


def stale_locks(backend_url: str, project: str, stack: str) -> list[tuple[Path, dict]]:
    if not backend_url.startswith("file://"):
        return []
    root = Path(backend_url[len("file://"):].split("?")[0]).expanduser()
    stale = []
    for lock in sorted(root.glob(f".pulumi/locks/*/{project}/{stack}/*.json")):
        try:
            owner = json.loads(lock.read_text())
        except (OSError, ValueError):
            continue
        if owner.get("hostname") == socket.gethostname() and not process_runs(int(owner.get("pid", 0))):
            stale.append((lock, owner))
    return stale


def main() -> int:
    stack = sys.argv[1]
    project_dir = Path(sys.argv[2] if len(sys.argv) > 2 else ".")
    found = stale_locks(os.environ.get("PULUMI_BACKEND_URL", ""), project_name(project_dir), stack)
    if not found:
        return 0
    for _, owner in found:
        print(f"stale_lock: stack {stack!r} was locked by pulumi pid {owner.get('pid')} (started "
              f"{owner.get('timestamp')}), which no longer runs; clearing the lock", file=sys.stderr)
    subprocess.run(["pulumi", "cancel", "--yes", "--stack", stack, "--cwd", str(project_dir)], check=True,
                   stdout=subprocess.DEVNULL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
