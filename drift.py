"""Drift report of a deployed stack: what PostgreSQL and Vault hold that the
stack's settings and state do not say.

    python drift.py --stack dev [--cwd .]

1. Privileges: every privilege, membership or attribute that the stack's group
   roles or their users hold beyond the settings (clients/privilege_audit.py),
   with the statement that takes it back (`pulumi up` does).
2. Orphan logins: login roles that look like the stack's users (members of its
   groups, or named with its username templates' prefixes) but belong to no live
   Vault lease: their VALID UNTIL matches no lease's expiry (Vault sets both at
   issue and at each renewal), or has passed. Left by `bao lease revoke -force`,
   or a revocation that failed. Reported, never dropped here.
3. State: `pulumi refresh --preview-only --expect-no-changes`, the objects the
   stack manages that changed behind its back.
4. Tables in the application's schema that no setting names and the program did
   not make (a migration's, not yet granted to any role): listed for a person to
   decide, not counted as drift.

Reads the stack's outputs (declaredPrivileges, postgres, vaultMountPath),
VAULT_TOKEN (listing leases needs `list` and `sudo` on
sys/leases/lookup/<mount>/creds/*) and the deploy session's PGPASSFILE. Prints a
readable report; exits 0 when nothing drifted, 1 when something did, 2 when it
could not look (`make drift` exits non-zero for either).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import hvac
import hvac.exceptions

from clients.postgres import PostgresUnreachable, connect, scalar
from clients.privilege_audit import Declared, Finding, audit, login_users
from clients.tls import operator_token, vault_tls_verify

# Vault writes VALID UNTIL and the lease's expiry from one instant, a few ms apart.
EXPIRY_SLACK_SECONDS = 5
# A user whose VALID UNTIL passed longer ago than this should have been revoked.
EXPIRED_GRACE_SECONDS = 120


def stack_outputs(stack: str, cwd: str) -> dict[str, Any]:
    done = subprocess.run(
        ["pulumi", "stack", "output", "--json", "--stack", stack, "--cwd", cwd], capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"drift: cannot read the outputs of stack {stack!r}: {done.stderr.strip()}")
    return json.loads(done.stdout)


def lease_expiries(vault: hvac.Client, mount: str, roles: list[str]) -> list[datetime.datetime]:
    """The expiry of every live lease of the stack's roles."""
    expiries = []
    for role in roles:
        try:
            listed = vault.sys.list_leases(prefix=f"{mount}/creds/{role}")
        except hvac.exceptions.InvalidPath:
            continue  # no lease at all
        for key in (listed.get("data") or {}).get("keys") or []:
            data = vault.sys.read_lease(f"{mount}/creds/{role}/{key}")["data"]
            if data.get("expire_time"):
                expiries.append(datetime.datetime.fromisoformat(data["expire_time"].replace("Z", "+00:00")))
    return expiries


def orphans(
    users: list[tuple[str, datetime.datetime | None]], expiries: list[datetime.datetime], now: datetime.datetime
) -> list[str]:
    """The users that no lease accounts for (each lease accounts for one user).
    Users issued in the same second share a VALID UNTIL, and a lease does not
    name its user: then the report says how many of them are orphans."""
    left = sorted(expiries)
    clusters: dict[datetime.datetime, list[str]] = {}
    found = []
    for name, valid_until in users:
        if valid_until is None or (now - valid_until).total_seconds() > EXPIRED_GRACE_SECONDS:
            found.append(
                f"{name} (VALID UNTIL {valid_until:%Y-%m-%d %H:%M:%S %Z}, passed)"
                if valid_until
                else f"{name} (no VALID UNTIL)"
            )
        else:
            clusters.setdefault(valid_until, []).append(name)
    for valid_until, names in sorted(clusters.items()):
        matched = [e for e in left if abs((e - valid_until).total_seconds()) <= EXPIRY_SLACK_SECONDS][: len(names)]
        for expiry in matched:
            left.remove(expiry)
        missing = len(names) - len(matched)
        when = f"VALID UNTIL {valid_until:%Y-%m-%d %H:%M:%S %Z}"
        if missing == len(names):
            found += [f"{name} ({when}, no lease expires then)" for name in names]
        elif missing:
            found.append(
                f"{missing} of {', '.join(names)} ({when}, {len(matched)} lease(s) expire then; "
                "a lease does not say which user is its own)"
            )
    return found


def refresh_changes(stack: str, cwd: str) -> tuple[bool, str]:
    """(changed, the refresh preview's summary)."""
    done = subprocess.run(
        [
            "pulumi",
            "refresh",
            "--preview-only",
            "--expect-no-changes",
            "--non-interactive",
            "--stack",
            stack,
            "--cwd",
            cwd,
        ],
        capture_output=True,
        text=True,
    )
    lines = [
        line.strip()
        for line in done.stdout.splitlines()
        if line.strip().startswith(("~", "-", "+")) and not line.rstrip().endswith("refreshing")
    ]
    if done.returncode and not lines:
        lines = (done.stderr.strip() or done.stdout.strip()).splitlines()[-5:]
    return done.returncode != 0, "\n".join(lines)


def unnamed_tables(conn, declared: Declared) -> list[str]:
    named = set(declared.program_relations) | {t for kinds in declared.groups.values() for t in kinds.get("tables", {})}
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (declared.schema,))
    return [name for (name,) in rows.fetchall() if name not in named]


def report(
    findings: list[Finding], orphan_users: list[str], refreshed: tuple[bool, str], unnamed: Sequence[str] = ()
) -> str:
    out = ["drift report", "", f"1. privileges beyond the settings: {len(findings) or 'none'}"]
    for finding in findings:
        out.append(f"   - {finding}")
        out.append(f"       {finding.statement};" if finding.statement else "       (by hand)")
    if findings:
        out.append("   `pulumi up` (make up) revokes them.")
    out += ["", f"2. orphan logins (no live lease): {len(orphan_users) or 'none'}"]
    out += [f"   - {name}" for name in orphan_users]
    if orphan_users:
        out.append('   Drop them as the admin (end their sessions first): DROP ROLE "<name>";')
    changed, summary = refreshed
    out += ["", f"3. objects changed behind the stack's back (pulumi refresh): {'yes' if changed else 'none'}"]
    out += [f"   {line}" for line in summary.splitlines()] if changed else []
    out += ["", f"4. tables no setting names (made by a migration?; not drift): {len(unnamed) or 'none'}"]
    out += [f"   - {name}: usable by no application role until one names it in pgcreds:roles" for name in unnamed]
    drifted = bool(findings or orphan_users or changed)
    out += ["", "drift: FOUND" if drifted else "drift: none"]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--cwd", default=".")
    args = parser.parse_args()
    outputs = stack_outputs(args.stack, args.cwd)
    if "declaredPrivileges" not in outputs:
        print(
            "drift: the stack has no declaredPrivileges output yet: run `pulumi up` once with this version",
            file=sys.stderr,
        )
        return 2
    declared = Declared.from_dict(outputs["declaredPrivileges"])
    token = operator_token()
    if not token:
        print("drift: export VAULT_TOKEN (or BAO_TOKEN) first", file=sys.stderr)
        return 2
    # The session's login (a preview's read-only one in CI), as the providers log in.
    postgres = {
        **outputs["postgres"],
        "user": os.environ.get("PGUSER") or outputs["postgres"].get("adminUser"),
        "password": None,
    }
    try:
        with connect(postgres) as conn:
            findings = audit(conn, declared)
            users = login_users(conn, declared.user_prefixes.values(), declared.groups)
            unnamed = unnamed_tables(conn, declared)
            now = scalar(conn, "SELECT now()")
    except PostgresUnreachable as error:
        print(f"drift: {error}", file=sys.stderr)
        return 2
    vault = hvac.Client(url=outputs["vaultAddress"], token=token, timeout=30, verify=vault_tls_verify())
    try:
        expiries = lease_expiries(vault, outputs["vaultMountPath"], sorted(outputs.get("groupRoles") or {}))
    except hvac.exceptions.Forbidden:
        print(
            f"drift: VAULT_TOKEN may not list the leases of {outputs['vaultMountPath']}/creds: it needs list and "
            "sudo on sys/leases/lookup/<mount>/creds/* (the preview policy has them)",
            file=sys.stderr,
        )
        return 2
    text = report(findings, orphans(users, expiries, now), refresh_changes(args.stack, args.cwd), unnamed)
    print(text)
    return 1 if text.endswith("drift: FOUND") else 0


if __name__ == "__main__":
    sys.exit(main())
