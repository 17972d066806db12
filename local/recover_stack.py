"""Puts a stack back in order after a `pulumi up` was killed, so that the next
`make up` goes on by itself, without anyone editing state:

    python local/recover_stack.py STACK [PROJECT_DIR]

1. The lock. 
A file backend locks a stack with `.pulumi/locks/organization/<project>/<stack>/<id>.json`
({"pid", "hostname", ...}) and removes the file when the command ends; a process
killed with SIGKILL never does. A lock is cleared (with `pulumi cancel`) only if
it was taken on this machine by a process that no longer runs; a live lock, or
one from another machine, is left for Pulumi to report. Other backends keep
their own locks and are not touched.

2. Pending creates: resources the killed run had begun to create. Pulumi keeps
them and will not clear them without a person at the keyboard. Those whose id
is their name (a PostgreSQL role, a Vault mount or auth method) are imported
by that id: a refresh then keeps what exists and drops what does not. The rest
are dropped (`--clear-pending-creates`): making them again is harmless, since
every other create here writes by name or adopts what it finds (tables).
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


# The input that is the provider's id, for the creates that fail on an existing object.
NATURAL_ID = {
    "postgresql:index/role:Role": "name",
    "vault:index/mount:Mount": "path",
    "vault:index/authBackend:AuthBackend": "path",
}


def pulumi(stack: str, project_dir: Path, *args: str) -> str:
    return subprocess.run(["pulumi", *args, "--stack", stack, "--cwd", str(project_dir)], check=True,
                          capture_output=True, text=True).stdout


def pending_creates(stack: str, project_dir: Path) -> list[dict]:
    exported = json.loads(pulumi(stack, project_dir, "stack", "export"))
    return [op["resource"] for op in exported.get("deployment", {}).get("pending_operations") or []
            if op.get("type") == "creating"]


def resolve_pending_creates(stack: str, project_dir: Path) -> None:
    pending = pending_creates(stack, project_dir)
    if not pending:
        return
    say(f"stack {stack!r} has {len(pending)} pending create(s) from an interrupted run: "
        + ", ".join(r["urn"].split("::")[-1] for r in pending))
    imports = [(r["urn"], str((r.get("inputs") or {}).get(NATURAL_ID.get(r["type"], ""), "")))
               for r in pending if r["type"] in NATURAL_ID]
    imports = [(urn, found) for urn, found in imports if found]
    if imports:
        pulumi(stack, project_dir, "refresh", "--yes", "--skip-preview",
               # The flag takes the urn and the id as two values, one after the other.
               *[arg for pair in imports for value in pair for arg in ("--import-pending-creates", value)])
    if pending_creates(stack, project_dir):
        pulumi(stack, project_dir, "refresh", "--yes", "--skip-preview", "--clear-pending-creates")
    say("pending creates resolved (imported by name where the object exists, otherwise made again)")


def say(message: str) -> None:
    print(f"recover_stack: {message}", file=sys.stderr)


def main() -> int:
    stack = sys.argv[1]
    project_dir = Path(sys.argv[2] if len(sys.argv) > 2 else ".")
    backend = os.environ.get("PULUMI_BACKEND_URL", "")
    found = stale_locks(backend, project_name(project_dir), stack)
    for _, owner in found:
        say(f"stack {stack!r} was locked by pulumi pid {owner.get('pid')} (started {owner.get('timestamp')}), "
            "which no longer runs; clearing the lock")
    if found:
        pulumi(stack, project_dir, "cancel", "--yes")
    if backend.startswith("file://") and found:
        resolve_pending_creates(stack, project_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
