"""Puts a stack back in order after a `pulumi up` was killed, so that the next
`make up` goes on by itself, without anyone editing state:

    python local/recover_stack.py STACK [PROJECT_DIR]

1. The lock.
A DIY backend locks a stack with an object `.pulumi/locks/organization/<project>/<stack>/<id>.json`
({"pid", "hostname", ...}): a file on the file backend, a row of the state table
(its bytes base64 in a JSON column) on the `postgres://` backend. The command
removes it when it ends; a process killed with SIGKILL never does. A lock is
cleared (with `pulumi cancel`) only if it was taken on this machine by a process
that no longer runs; a live lock, or one from another machine, is left for Pulumi
to report. Other backends (Pulumi Cloud, s3://) keep their own locks and are not touched.

2. Pending creates: resources the killed run had begun to create. Pulumi keeps
them and will not clear them without a person at the keyboard. Those whose id
is their name (a PostgreSQL role, a Vault mount or auth method) are imported
by that id: a refresh then keeps what exists and drops what does not. The rest
are dropped (`--clear-pending-creates`): making them again is harmless, since
every other create here writes by name or adopts what it finds (tables).

3. Roles created but not recorded at all (the kill came between PostgreSQL's
answer and the state's write): their claims are in the state, so they are
imported by name.

0. On the file backend, the stack file's metadata sidecar (`<stack>.json.attrs`,
written by gocloud's fileblob with a truncate and then a write, not atomically):
a kill between the two leaves it empty, and every later read of the stack fails
with "failed to load checkpoint: EOF" (measured: the fault test's kill). An empty
one is removed; without it the stack file reads with default metadata.

First of all, whether the stack file's `encryptedkey:` (the stack's data key,
encrypted by its transit key; written per machine, not committed) still decrypts.
One made by servers that were wiped or moved fails with `cipher: message
authentication failed`, which hides the cause: if the stack has no state here, the
line encrypts nothing that exists and is removed (Pulumi makes a new one); if it
has, and the state records a data key this Vault decrypts (a checkout used with
two sets of servers), the line takes that one; else the message names the key
and its restore.

Before all that, the plugins the killed run left behind are ended: Pulumi starts
its language host and providers in process groups of their own, so a SIGKILL of
the CLI leaves them running (a dynamic provider's `python -m pulumi.dynamic` waits
for ever). Only those that run in this project's folder and under no live
pulumi process are ended.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit


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


PLUGIN_MARKERS = (b"pulumi.dynamic", b"pulumi-resource-", b"pulumi-language-")


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _under_live_pulumi(pid: int) -> bool:
    """Whether a `pulumi` CLI process is among the ancestors of `pid`."""
    pid = _parent(pid)
    while pid > 1:
        try:
            program = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            return False
        if os.path.basename(program) == b"pulumi":
            return True
        pid = _parent(pid)
    return False


def leftover_plugins(project_dir: Path) -> list[int]:
    """The language hosts and providers (dynamic ones included) running in this
    project's folder whose pulumi process is gone."""
    project, found = str(project_dir.resolve()), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if (
            cwd == project
            and any(marker in cmdline for marker in PLUGIN_MARKERS)
            and not _under_live_pulumi(int(entry.name))
        ):
            found.append(int(entry.name))
    return found


def end_leftover_plugins(project_dir: Path) -> None:
    pids = leftover_plugins(project_dir)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)  # they hold no state of their own; the engine's is in the backend
        except ProcessLookupError:
            pass
    if pids:
        say(f"ended {len(pids)} plugin process(es) the interrupted run left running: pid {', '.join(map(str, pids))}")


def file_backend_root(backend_url: str) -> Path:
    """The folder of a `file://` backend URL (its query, if any, dropped)."""
    return Path(backend_url[len("file://") :].split("?")[0]).expanduser()


def file_locks(backend_url: str, project: str, stack: str) -> list[tuple[str, bytes]]:
    found = []
    for lock in sorted(file_backend_root(backend_url).glob(f".pulumi/locks/*/{project}/{stack}/*.json")):
        try:
            found.append((str(lock), lock.read_bytes()))
        except OSError:
            continue
    return found


def remove_empty_attributes(backend_url: str, project: str, stack: str) -> list[Path]:
    """The stack's empty `.attrs` sidecars on the file backend (see 0. above), removed."""
    if not backend_url.startswith("file://"):
        return []
    empty = [
        path
        for path in file_backend_root(backend_url).glob(f".pulumi/stacks/{project}/{stack}.json*.attrs")
        if path.stat().st_size == 0
    ]
    for path in empty:
        path.unlink()
    return empty


def postgres_locks(backend_url: str, project: str, stack: str) -> list[tuple[str, bytes]]:
    """The lock rows of the `postgres://` backend, read with the deploy session's
    login (PGUSER, PGPASSFILE), as the CLI reads them."""
    import psycopg  # only for this backend
    from psycopg import sql

    parts = urlsplit(backend_url)
    query: dict[str, Any] = dict(parse_qsl(parts.query))
    table = query.pop("table", "pulumi_state")
    with psycopg.connect(
        host=parts.hostname,
        port=parts.port or 5432,
        dbname=parts.path.lstrip("/"),
        user=parts.username or None,
        connect_timeout=10,
        **query,
    ) as conn:
        rows = conn.execute(
            sql.SQL("SELECT key, data->>'data' FROM {} WHERE key LIKE %s ORDER BY key").format(
                sql.Identifier(*table.split("."))
            ),
            (f"%.pulumi/locks/%/{project}/{stack}/%.json",),
        ).fetchall()
    return [(key, base64.b64decode(data)) for key, data in rows]


def stale_locks(backend_url: str, project: str, stack: str) -> list[tuple[str, dict]]:
    if backend_url.startswith("file://"):
        found = file_locks(backend_url, project, stack)
    elif backend_url.startswith(("postgres://", "postgresql://")):
        found = postgres_locks(backend_url, project, stack)
    else:
        return []
    stale = []
    for where, content in found:
        try:
            owner = json.loads(content)
        except ValueError:
            continue
        if owner.get("hostname") == socket.gethostname() and not process_runs(int(owner.get("pid", 0))):
            stale.append((where, owner))
    return stale


# The input that is the provider's id, for the creates that fail on an existing object.
NATURAL_ID = {
    "postgresql:index/role:Role": "name",
    "vault:index/mount:Mount": "path",
    "vault:index/authBackend:AuthBackend": "path",
}


def pulumi(stack: str, project_dir: Path, *args: str) -> str:
    done = subprocess.run(
        ["pulumi", *args, "--stack", stack, "--cwd", str(project_dir)], capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"recover_stack: `pulumi {' '.join(args)}` on stack {stack!r} failed:\n{done.stderr.strip()}")
    return done.stdout


def exported(stack: str, project_dir: Path) -> dict:
    return json.loads(pulumi(stack, project_dir, "stack", "export")).get("deployment", {})


def pending_creates(stack: str, project_dir: Path) -> list[dict]:
    return [
        op["resource"]
        for op in exported(stack, project_dir).get("pending_operations") or []
        if op.get("type") == "creating"
    ]


def natural_id(resource: dict) -> str:
    return str((resource.get("inputs") or {}).get(NATURAL_ID.get(resource["type"], ""), "") or "")


def import_resource(stack: str, project_dir: Path, kind: str, urn: str, id_: str, parent: str, provider: str) -> bool:
    """`pulumi import` of one object under the program's own name, parent and
    provider; False if it does not exist (then `up` makes it)."""
    provider_urn = provider.rsplit("::", 1)[0] if provider.count("::") > 3 else provider
    done = subprocess.run(
        [
            "pulumi",
            "import",
            kind,
            urn.split("::")[-1],
            id_,
            "--parent",
            f"parent={parent}",
            "--provider",
            f"provider={provider_urn}",
            "--protect=false",
            "--generate-code=false",
            "--yes",
            "--skip-preview",
            "--stack",
            stack,
            "--cwd",
            str(project_dir),
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode == 0:
        say(f"{id_!r} ({kind}), made by the interrupted run, is now in the state")
    return done.returncode == 0


def resolve_pending_creates(stack: str, project_dir: Path, before_cancel: list[dict]) -> None:
    """`before_cancel`: the pending creates as the killed run left them (cancelling
    may drop them from the state, but not the objects they made)."""
    if before_cancel:
        say(
            f"stack {stack!r} had {len(before_cancel)} pending create(s) from the interrupted run: "
            + ", ".join(r["urn"].split("::")[-1] for r in before_cancel)
        )
    pending = pending_creates(stack, project_dir)
    imports = [(r["urn"], natural_id(r)) for r in pending if natural_id(r)]
    if imports:
        pulumi(
            stack,
            project_dir,
            "refresh",
            "--yes",
            "--skip-preview",
            # The flag takes the urn and the id as two values, one after the other.
            *[arg for pair in imports for value in pair for arg in ("--import-pending-creates", value)],
        )
    if pending_creates(stack, project_dir):
        pulumi(stack, project_dir, "refresh", "--yes", "--skip-preview", "--clear-pending-creates")
    # Those the cancel dropped from the state: imported by their name if they exist.
    recorded = {r["urn"] for r in exported(stack, project_dir).get("resources") or []}
    for resource in before_cancel:
        if (
            natural_id(resource)
            and resource["urn"] not in recorded
            and resource.get("parent")
            and resource.get("provider")
        ):
            import_resource(
                stack,
                project_dir,
                resource["type"],
                resource["urn"],
                natural_id(resource),
                resource["parent"],
                resource["provider"],
            )


CLAIM = "pulumi-python:dynamic/postgresql:RoleClaim"
ROLE = "postgresql:index/role:Role"


def adopt_claimed_roles(stack: str, project_dir: Path) -> None:
    """A role whose create the killed run had sent but not recorded: its claim is
    in the state (made first, when the name was free) and the role is not. It
    can only be this stack's, so it is imported under its resource name; if
    PostgreSQL does not have it, the import fails and `up` simply makes it."""
    resources = exported(stack, project_dir).get("resources") or []
    urns = {r["urn"] for r in resources}
    providers = [r["urn"] for r in resources if r["type"] == "pulumi:providers:postgresql"]
    if len(providers) != 1:
        return
    for claim in (r for r in resources if r["type"] == CLAIM):
        role_urn = claim["urn"].replace(CLAIM, ROLE).removesuffix("-claim")
        name = (claim.get("outputs") or {}).get("name") or (claim.get("inputs") or {}).get("name")
        if role_urn in urns or not name:
            continue
        import_resource(stack, project_dir, ROLE, role_urn, name, claim["parent"], providers[0])


def say(message: str) -> None:
    print(f"recover_stack: {message}", file=sys.stderr)


ENCRYPTED_KEY = re.compile(r"^encryptedkey:\s*(\S+)\s*\n?", re.MULTILINE)
SECRETS_PROVIDER = re.compile(r"^secretsprovider:\s*hashivault://(\S+)\s*$", re.MULTILINE)


def stale_encrypted_key(stack: str, project_dir: Path) -> None:
    """Removes an `encryptedkey:` that the stack's transit key cannot decrypt when the
    stack has no state here; with a state, stops with what to do."""
    stack_file = project_dir / f"Pulumi.{stack}.yaml"
    text = stack_file.read_text() if stack_file.is_file() else ""
    encrypted, provider = ENCRYPTED_KEY.search(text), SECRETS_PROVIDER.search(text)
    if not encrypted or not provider or not os.environ.get("VAULT_ADDR"):
        return
    import hvac  # only here (0.1 s)
    import hvac.exceptions

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from clients.tls import operator_token, vault_tls_verify

    client = hvac.Client(url=os.environ["VAULT_ADDR"], token=operator_token(), verify=vault_tls_verify())
    try:
        client.secrets.transit.decrypt_data(provider.group(1), base64.b64decode(encrypted.group(1)).decode())
        return
    except (hvac.exceptions.InvalidRequest, hvac.exceptions.InvalidPath, ValueError) as error:
        why = str(error).split(", on post")[0].strip()
    except hvac.exceptions.VaultError:
        return  # (no access, sealed …: the CLI says so itself)
    listed = subprocess.run(
        ["pulumi", "stack", "ls", "--json", "--cwd", str(project_dir)], capture_output=True, text=True, timeout=120
    )
    names = (
        {entry.get("name", "").split("/")[-1] for entry in json.loads(listed.stdout or "[]")}
        if listed.returncode == 0
        else {stack}
    )
    recorded = state_encrypted_key(stack, project_dir) if stack in names else None
    if recorded:
        try:
            client.secrets.transit.decrypt_data(provider.group(1), base64.b64decode(recorded).decode())
        except (hvac.exceptions.VaultError, ValueError):
            recorded = None
    if recorded:
        # (a checkout used with two sets of servers, such as OpenBao's and HashiCorp Vault's)
        stack_file.write_text(ENCRYPTED_KEY.sub(f"encryptedkey: {recorded}\n", text))
        say(
            f"Pulumi.{stack}.yaml's encryptedkey was made by other servers ({why}); the stack's state here "
            "records its own, which this Vault decrypts: the line now holds that one"
        )
        return
    if stack in names:
        raise SystemExit(
            f"recover_stack: Pulumi.{stack}.yaml's encryptedkey cannot be decrypted with the transit key "
            f"{provider.group(1)} ({why}), and the stack has a state here: restore the key it was made with "
            f"(python -m deployer.keys restore --stack {stack} --backup-dir <backups>), or point VAULT_ADDR at "
            "the Vault that holds it. Nothing was changed."
        )
    stack_file.write_text(ENCRYPTED_KEY.sub("", text))
    say(
        f"Pulumi.{stack}.yaml's encryptedkey was made by a Vault whose key is not {provider.group(1)} here "
        f"({why}: servers wiped or moved), and the stack has no state here: the line is removed, and the "
        "stack gets a new data key"
    )


def state_encrypted_key(stack: str, project_dir: Path) -> str | None:
    """The data key the stack's state records (its secrets manager's state), which
    `pulumi stack export` shows without decrypting anything."""
    exported = subprocess.run(
        ["pulumi", "stack", "export", "--stack", stack, "--cwd", str(project_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if exported.returncode != 0:
        return None
    providers = (json.loads(exported.stdout).get("deployment") or {}).get("secrets_providers") or {}
    return (providers.get("state") or {}).get("encryptedkey") or None


def main() -> int:
    stack = sys.argv[1]
    project_dir = Path(sys.argv[2] if len(sys.argv) > 2 else ".")
    stale_encrypted_key(stack, project_dir)
    backend = os.environ.get("PULUMI_BACKEND_URL", "")
    found = stale_locks(backend, project_name(project_dir), stack)
    for _, owner in found:
        say(
            f"stack {stack!r} was locked by pulumi pid {owner.get('pid')} (started {owner.get('timestamp')}), "
            "which no longer runs; clearing the lock"
        )
    if not found:
        return 0
    for path in remove_empty_attributes(backend, project_name(project_dir), stack):
        say(f"removed {path.name}: the killed run left it empty (the stack could not be read)")
    end_leftover_plugins(project_dir)
    before_cancel = pending_creates(stack, project_dir)
    pulumi(stack, project_dir, "cancel", "--yes")
    resolve_pending_creates(stack, project_dir, before_cancel)
    adopt_claimed_roles(stack, project_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
