"""What a stack made, found again after its state was lost, and removed.

`pulumi stack rm --force`, or a wiped state database, leaves every object the
stack made behind: its PostgreSQL roles, its Vault mount with its connections,
roles and live leases, its AppRole auth method and policies. The next `make up`
rightly refuses the roles (the claims: never a role this stack did not make), and
nothing else knows them any more. Every object of a stack carries the stack's
mark (`providers._shared.stack_mark`: a role's comment, a mount's or auth
method's description), which outlives the state; this command finds them by it:

    python -m deployer.orphans list --stack dev     # what it would remove
    python -m deployer.orphans remove --stack dev   # then `make up` makes the stack again

`remove` revokes the leases first (Vault's revocation statements drop the
credentials' roles), then removes the Vault objects and the roles; what the
roles owned passes to the login that runs it. Tables and their rows are kept,
as `pulumi destroy` keeps them by default, and the next `make up` adopts them.
It refuses a stack that still has a state: that one is `pulumi destroy`'s.

Why remove rather than adopt: adopting means importing every object with inputs
equal to what the program declares, or `up` fails on the first difference; and
a stack made again from its settings is the state a reviewer can trust. Live
credentials are revoked with the leases, so applications log in again.

Runs in the deploy session (`. local/dev-env.sh`): VAULT_ADDR and VAULT_TOKEN,
and PostgreSQL as PGUSER with PGPASSFILE; the server comes from the stack's settings
(an application stack's: its platform stack's outputs). For an application stack
the token must also list the platform mount's connections and roles (the
platform deployer's, or an operator's), and PGUSER be its deploy login.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import psycopg
import yaml
from psycopg import sql

from clients.postgres import connect, ensure_member
from clients.tls import operator_token, vault_tls_verify
from providers._shared import stack_mark
from settings import NAMESPACE, SettingsError, parse_settings

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Orphans:
    """A stack's objects, found by its mark."""

    mounts: list[str] = field(default_factory=list)
    """Its database secrets engines (the whole mount is its)."""
    auth_paths: list[str] = field(default_factory=list)
    """Its AppRole auth methods."""
    policies: list[str] = field(default_factory=list)
    connections: list[str] = field(default_factory=list)
    """`<mount>/config/<name>` in a mount of another stack (an application stack's)."""
    vault_roles: list[str] = field(default_factory=list)
    """`<mount>/roles/<name>` in a mount of another stack."""
    approle_roles: list[str] = field(default_factory=list)
    """`auth/<path>/role/<name>` in an auth method of another stack."""
    lease_prefixes: list[str] = field(default_factory=list)
    """Revoked first: `<mount>/` or `<mount>/creds/<role>`."""
    pg_roles: list[str] = field(default_factory=list)

    def lines(self) -> Iterator[str]:
        for title, names in (
            ("leases under", self.lease_prefixes),
            ("Vault mount", self.mounts),
            ("Vault auth method", self.auth_paths),
            ("Vault policy", self.policies),
            ("Vault connection", self.connections),
            ("Vault role", self.vault_roles),
            ("AppRole role", self.approle_roles),
            ("PostgreSQL role", self.pg_roles),
        ):
            yield from (f"  {title} {name}" for name in names)

    def __bool__(self) -> bool:
        return any(list(self.lines()))


def stack_settings(project_dir: Path, stack: str):
    """The stack's settings, read from its stack file as the program reads them
    (secrets are not needed: only where its server and mounts are)."""
    stack_file = project_dir / f"Pulumi.{stack}.yaml"
    if not stack_file.is_file():
        raise SystemExit(f"orphans: {stack_file} does not exist; the stack's settings say where its objects are")
    config = (yaml.safe_load(stack_file.read_text()) or {}).get("config") or {}
    raw: dict[str, Any] = {}
    for key, value in config.items():
        if key.startswith(f"{NAMESPACE}:") and not isinstance(value, dict):  # ({secure: …} values are not needed)
            raw[key.split(":", 1)[1]] = value if isinstance(value, str) else json.dumps(value)
    try:
        return parse_settings(raw, lambda key: None, os.environ, stack)
    except SettingsError as error:
        raise SystemExit(f"orphans: the stack's settings do not load: {error}") from None


def project_name(project_dir: Path) -> str:
    return str(yaml.safe_load((project_dir / "Pulumi.yaml").read_text())["name"])


def has_state(project_dir: Path, stack: str) -> bool:
    """Whether the backend holds the stack with anything in it: a stack made anew
    (`make up` selects it with --create), whose `up` the claims refused, holds
    only components, providers and stack references."""
    exported = subprocess.run(
        ["pulumi", "stack", "export", "--stack", stack, "--cwd", str(project_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if exported.returncode != 0:
        if "no stack named" in exported.stderr:
            return False
        raise SystemExit(f"orphans: `pulumi stack export` failed: {exported.stderr.strip()}")
    resources = (json.loads(exported.stdout).get("deployment") or {}).get("resources") or []
    # (`pulumi:` types are the engine's own: providers, and an application stack's StackReference)
    return any(r.get("custom") and not r["type"].startswith("pulumi:") for r in resources)


def marked_roles(conn: psycopg.Connection, mark: str) -> list[str]:
    return [
        name
        for (name,) in conn.execute(
            "SELECT rolname FROM pg_roles WHERE shobj_description(oid, 'pg_authid') = %s ORDER BY rolname", (mark,)
        )
    ]


def listed(client: hvac.Client, path: str) -> list[str]:
    try:
        return list((client.list(path) or {}).get("data", {}).get("keys", []))
    except hvac.exceptions.InvalidPath:
        return []
    except hvac.exceptions.Forbidden:
        raise SystemExit(
            f"orphans: VAULT_TOKEN may not list {path}: an application stack's objects are found among its "
            "platform's, so this needs the platform deployer's token or an operator's. Nothing was changed."
        ) from None


def find(client: hvac.Client, conn: psycopg.Connection, mark: str, mount_path: str, approle_path: str) -> Orphans:
    found = Orphans(pg_roles=marked_roles(conn, mark))
    for path, mount in client.sys.list_mounted_secrets_engines()["data"].items():
        if isinstance(mount, dict) and mount.get("type") == "database" and mark in (mount.get("description") or ""):
            found.mounts.append(path.rstrip("/"))
    for path, method in client.sys.list_auth_methods()["data"].items():
        if isinstance(method, dict) and mark in (method.get("description") or ""):
            found.auth_paths.append(path.rstrip("/"))
    for mount in found.mounts:
        found.lease_prefixes.append(f"{mount}/")
        prefix = f"pgcreds-{mount.replace('/', '-')}-"
        found.policies += [p for p in client.sys.list_acl_policies()["data"]["keys"] if p.startswith(prefix)]
    # An application stack's objects live in its platform's mount: its connections
    # log in as its own (marked) roles, and its Vault roles use those connections.
    if mount_path not in found.mounts:
        ours = set(found.pg_roles)
        for name in listed(client, f"{mount_path}/config"):
            config = client.read(f"{mount_path}/config/{name}") or {}
            if (config.get("data") or {}).get("connection_details", {}).get("username") in ours:
                found.connections.append(f"{mount_path}/config/{name}")
        connections = {path.rsplit("/", 1)[-1] for path in found.connections}
        for name in listed(client, f"{mount_path}/roles"):
            role = client.read(f"{mount_path}/roles/{name}") or {}
            if (role.get("data") or {}).get("db_name") in connections:
                found.vault_roles.append(f"{mount_path}/roles/{name}")
                found.lease_prefixes.append(f"{mount_path}/creds/{name}")
        if approle_path not in found.auth_paths:
            approles = set(listed(client, f"auth/{approle_path}/role"))
            found.approle_roles += [
                f"auth/{approle_path}/role/{path.rsplit('/', 1)[-1]}"
                for path in found.vault_roles
                if path.rsplit("/", 1)[-1] in approles
            ]
    return found


def drop_role(server: dict[str, Any], conn: psycopg.Connection, role: str) -> None:
    """Drops a role, first in every database where it owns or was granted something
    (REASSIGN OWNED works per database): what it owned passes to the current login."""
    databases = [
        name
        for (name,) in conn.execute(
            "SELECT DISTINCT d.datname FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid "
            "WHERE s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = %s)",
            (role,),
        )
    ]
    ensure_member(conn, role)
    for database in databases:
        with connect({**server, "database": database}) as there:
            there.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(sql.Identifier(role)))
            there.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def remove(client: hvac.Client, server: dict[str, Any], conn: psycopg.Connection, found: Orphans) -> None:
    # Leases first: their revocation statements drop the credentials' roles, and
    # need the connections that are removed next.
    for prefix in found.lease_prefixes:
        client.sys.revoke_prefix(prefix)
    for path in found.approle_roles + found.vault_roles + found.connections:
        client.delete(path)
    for path in found.auth_paths:
        client.sys.disable_auth_method(path)
    for mount in found.mounts:
        client.sys.disable_secrets_engine(mount)
    for policy in found.policies:
        client.sys.delete_acl_policy(policy)
    for role in found.pg_roles:
        drop_role(server, conn, role)


def postgres_server(settings, project_dir: Path) -> dict[str, Any]:
    """Where the stack's roles are: its settings' server, or an application stack's
    platform stack's (its `postgres` output)."""
    if settings.layout.kind != "application":
        postgres = settings.postgres
        return {
            "host": postgres.host,
            "port": postgres.port,
            "database": postgres.database,
            "sslmode": postgres.sslmode,
            "sslrootcert": postgres.sslrootcert,
        }
    read = subprocess.run(
        [
            "pulumi",
            "stack",
            "output",
            "postgres",
            "--json",
            "--stack",
            settings.layout.platform_stack,
            "--cwd",
            str(project_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if read.returncode != 0:
        raise SystemExit(
            f"orphans: the platform stack {settings.layout.platform_stack!r} does not say where "
            f"PostgreSQL is: {read.stderr.strip()}"
        )
    platform = json.loads(read.stdout)
    return {
        "host": platform["host"],
        "port": platform["port"],
        "database": platform["database"],
        "sslmode": platform.get("sslmode") or "prefer",
        "sslrootcert": platform.get("sslrootcert"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="List or remove what a stack whose state was lost made.")
    parser.add_argument("action", choices=("list", "remove"))
    parser.add_argument("--stack", required=True)
    parser.add_argument("--project-dir", type=Path, default=REPO)
    args = parser.parse_args(argv)
    mark = stack_mark(project_name(args.project_dir), args.stack)
    settings = stack_settings(args.project_dir, args.stack)
    if settings.layout.kind != "application" and not hasattr(settings.postgres, "port"):
        raise SystemExit(
            "orphans: an aiven stack's server is the service it made; a lost aiven state is not "
            "handled here yet (remove the service in Aiven's console, then its Vault mount)"
        )
    if has_state(args.project_dir, args.stack):
        raise SystemExit(
            f"orphans: the stack {args.stack!r} has a state with resources in it: `pulumi destroy` "
            "removes what it made. Nothing was changed."
        )
    address, token = os.environ.get("VAULT_ADDR", ""), operator_token()
    if not address or not token:
        raise SystemExit("orphans: VAULT_ADDR and VAULT_TOKEN must be set (`. local/dev-env.sh`)")
    client = hvac.Client(url=address, token=token, verify=vault_tls_verify())
    server = postgres_server(settings, args.project_dir)
    with connect(server) as conn:
        found = find(client, conn, mark, settings.vault.mount_path, settings.vault.approle_path)
        if not found:
            print(f"orphans: nothing carries the mark {mark!r}", file=sys.stderr)
            return 0
        verb = "removing" if args.action == "remove" else "would remove (run `remove`)"
        print(f"orphans: {verb}, by the mark {mark!r}; tables and their rows are kept:", file=sys.stderr)
        print("\n".join(found.lines()), file=sys.stderr)
        if args.action == "remove":
            remove(client, server, conn, found)
            print(
                f"orphans: done; `make up` (or `pulumi up`) makes the stack {args.stack!r} again and adopts its tables",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
