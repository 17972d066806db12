"""Who gets access, in plain words: for a reviewer who is not a Pulumi expert.

    python -m review.access --stack dev             # `make access`: declared and real, side by side
    python -m review.access --stack dev --changes   # what the stack file changes, as ci/preview.sh comments it

Declared access is read from two places: what is deployed (the stack's
`roleAccess` output, the settings of its last `up`) and what the stack file
says now (`pgcreds:roles`, checked by the program's own settings code). Their
difference is the pull request's access change: gains, losses, new and removed
roles, TTL changes, each one line. A setting the program refuses (a sensitive
table, say) is said with the program's reason: nothing is then deployed.

Real access is what a credential of each role can do on the server: the
catalog's answer (`has_table_privilege`, which counts the group's grants,
PUBLIC's and every membership) for each table of the schema, beside Vault's
TTLs for the role. A difference from the declared is marked.

Read-only everywhere: `pulumi stack output`, SELECTs on the catalog, reads of
`<mount>/roles/<role>`. Never prints a secret.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from components.app_role import TABLE_PRIVILEGES, AppRole
from settings import NAMESPACE, parse_roles
from tables import APP_TABLES

REPO = Path(__file__).resolve().parents[1]
SENSITIVE_TABLES = tuple(t.name for t in APP_TABLES if t.sensitive)
# Every privilege a table can carry (PostgreSQL 15 to 18), in the catalog's order.
TABLE_PRIVILEGE_WORDS = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
OWNER_ACCESS = "acts as the table owner"


@dataclass(frozen=True)
class RoleAccess:
    """One role's declared access: tables with their privileges, and its credentials' life."""

    access: str
    tables: dict[str, tuple[str, ...]]
    default_ttl: int | None = None
    max_ttl: int | None = None
    secret_id_uses: int | None = None
    locked: bool = False


Model = dict[str, RoleAccess]


@dataclass
class Report:
    """What a pull request changes: before (deployed), after (the stack file), and
    what the program refuses in the stack file."""

    stack: str
    before: Model
    after: Model
    refused: list[str] = field(default_factory=list)
    deployed: bool = True
    """False for a stack never deployed: every role is new."""


def _privileges(access: str) -> tuple[str, ...]:
    return TABLE_PRIVILEGES.get(access, ())


def from_roles(roles: Iterable[AppRole]) -> Model:
    return {
        role.name: RoleAccess(
            role.access,
            {table: _privileges(role.access) for table in role.tables},
            role.default_ttl_seconds,
            role.max_ttl_seconds,
            role.secret_id_uses,
            role.locked,
        )
        for role in roles
    }


def from_outputs(outputs: Mapping[str, Any]) -> Model:
    """The deployed roles (`roleAccess`; TTLs only from stacks deployed with them)."""
    model: Model = {}
    for name, entry in sorted((outputs.get("roleAccess") or {}).items()):
        access = str(entry.get("access", ""))
        model[name] = RoleAccess(
            access,
            {table: _privileges(access) for table in entry.get("tables") or []},
            entry.get("defaultTtl"),
            entry.get("maxTtl"),
            entry.get("secretIdUses"),
            bool(entry.get("locked")),
        )
    return model


def stack_file_roles(path: Path) -> tuple[Model, list[str]]:
    """The stack file's `pgcreds:roles`, as the program reads them, and its refusals."""
    config = (yaml.safe_load(path.read_text()) or {}).get("config") or {} if path.is_file() else {}
    if config.get(f"{NAMESPACE}:stackKind") == "platform":
        return {}, []
    roles, problems = parse_roles(config.get(f"{NAMESPACE}:roles"))
    return from_roles(roles), problems


# --- words -------------------------------------------------------------------


def duration(seconds: int | None) -> str:
    if seconds is None:
        return "?"
    # (whole days from two on; 24h stays 24h, as a stack file says it)
    for unit, size, least in (("d", 86400, 2 * 86400), ("h", 3600, 3600), ("m", 60, 60)):
        if seconds % size == 0 and seconds >= least:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _joined(words: Iterable[str]) -> str:
    return ", ".join(words)


def _on_tables(access: RoleAccess) -> str:
    if access.access == "migrate":
        return f"{OWNER_ACCESS} (creates and alters tables; every privilege on them)"
    if not access.tables:
        return "no table"
    by_privileges: dict[tuple[str, ...], list[str]] = {}
    for table, privileges in sorted(access.tables.items()):
        by_privileges.setdefault(privileges, []).append(table)
    return "; ".join(f"{_joined(p)} on {_joined(f'`{t}`' for t in tables)}" for p, tables in by_privileges.items())


def _life(access: RoleAccess) -> str:
    return f"credentials last {duration(access.default_ttl)}, at most {duration(access.max_ttl)}"


def changes(before: Model, after: Model) -> list[str]:
    """One line per change, in plain words; empty when nothing changes."""
    lines: list[str] = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old is None and new is not None:
            lines.append(f"new role `{name}`: {_on_tables(new)}; {_life(new)}")
            continue
        if new is None and old is not None:
            lines.append(f"role removed: `{name}` (had {_on_tables(old)}); its live credentials are revoked")
            continue
        assert old is not None and new is not None
        if (old.access == "migrate") != (new.access == "migrate"):
            lines.append(f"`{name}` now {_on_tables(new)} (was: {_on_tables(old)})")
        else:
            gains: dict[tuple[str, ...], list[str]] = {}
            losses: dict[tuple[str, ...], list[str]] = {}
            for table in sorted(set(old.tables) | set(new.tables)):
                had, has = set(old.tables.get(table, ())), set(new.tables.get(table, ()))
                gained = tuple(p for p in TABLE_PRIVILEGE_WORDS if p in has - had)
                lost = tuple(p for p in TABLE_PRIVILEGE_WORDS if p in had - has)
                if gained:
                    gains.setdefault(gained, []).append(table)
                if lost:
                    losses.setdefault(lost, []).append(table)
            for privileges, tables in gains.items():
                lines.append(f"`{name}` gains {_joined(privileges)} on {_joined(f'`{t}`' for t in tables)}")
            for privileges, tables in losses.items():
                lines.append(f"`{name}` loses {_joined(privileges)} on {_joined(f'`{t}`' for t in tables)}")
        for label, was, now in (
            ("credentials last", old.default_ttl, new.default_ttl),
            ("credentials last at most", old.max_ttl, new.max_ttl),
        ):
            if was != now and was is not None:
                lines.append(f"`{name}`: {label} {duration(now)} instead of {duration(was)}")
        if old.secret_id_uses is not None and old.secret_id_uses != new.secret_id_uses:
            lines.append(f"`{name}`: a secret-id allows {new.secret_id_uses} logins instead of {old.secret_id_uses}")
        if old.locked != new.locked:
            lines.append(
                f"`{name}` is locked: Vault issues it no new credentials"
                if new.locked
                else f"`{name}` is unlocked: Vault issues its credentials again"
            )
    return lines


def nobody_gains(after: Model) -> str:
    """The sentence on the sensitive tables: true of every stack the program accepts."""
    holders = sorted(name for name, access in after.items() if set(access.tables) & set(SENSITIVE_TABLES))
    tables = _joined(f"`{t}`" for t in SENSITIVE_TABLES)
    if holders:  # (the settings refuse this; said plainly if it ever got this far)
        return f"{_joined(f'`{h}`' for h in holders)} would gain access to {tables}"
    return f"nobody gains {tables}"


def _node(prefix: str, name: str) -> str:
    return prefix + re.sub(r"[^A-Za-z0-9]", "_", name)


def mermaid(model: Model) -> str:
    """A flowchart: roles on the left, tables on the right, an edge per grant
    labelled with its privileges; the sensitive tables stand apart, with no edge."""
    lines = ["flowchart LR"]
    tables = sorted({t for access in model.values() for t in access.tables} | set(SENSITIVE_TABLES))
    for name in sorted(model):
        lines.append(f'  {_node("r_", name)}(["{name}"])')
    for table in tables:
        lines.append(f'  {_node("t_", table)}[("{table}")]')
    for name, access in sorted(model.items()):
        if access.access == "migrate":
            lines.append(f'  {_node("r_", name)} -. "{OWNER_ACCESS}" .-> {_node("t_", "owner")}')
            continue
        for table, privileges in sorted(access.tables.items()):
            lines.append(f'  {_node("r_", name)} -->|"{_joined(privileges)}"| {_node("t_", table)}')
    if any(access.access == "migrate" for access in model.values()):
        lines.append(f'  {_node("t_", "owner")}{{{{"the table owner role"}}}}')
    lines.append("  classDef sensitive fill:#fde2e1,stroke:#c0392b")
    if SENSITIVE_TABLES:
        lines.append(f"  class {','.join(_node('t_', t) for t in SENSITIVE_TABLES)} sensitive")
    return "\n".join(lines)


def comment(report: Report) -> str:
    """The access part of a pull request's comment (Markdown), above the Pulumi diff."""
    out = [f"#### Access changes on stack `{report.stack}`", ""]
    if report.refused:
        out.append("**Refused by the program: nothing is deployed until the stack file is fixed.**")
        out += [f"- {problem}" for problem in report.refused]
        out.append("")
    lines = changes(report.before, report.after) if not report.refused else []
    if not report.deployed and lines:
        out.append("(the stack has not been deployed: every role is new)")
    if report.refused:
        out.append("Access is unchanged: the change above is refused.")
    elif not lines:
        out.append("This pull request changes no access.")
    else:
        out += [f"- {line}" for line in lines]
    out.append(f"- {nobody_gains(report.after if not report.refused else report.before)}")
    shown = report.before if report.refused else report.after
    if shown:
        when = "as deployed" if report.refused else "after this pull request"
        out += ["", f"<details><summary>who can reach which table, {when}</summary>", ""]
        out += ["```mermaid", mermaid(shown), "```", "</details>"]
    return "\n".join(out) + "\n"


# --- make access: declared and real ------------------------------------------


@dataclass
class RealRole:
    tables: dict[str, tuple[str, ...]]
    vault_ttls: tuple[int, int] | None
    """(default, max) as Vault holds them; None if the token may not read the role."""


def real_access(conn, schema: str, groups: Mapping[str, str]) -> dict[str, dict[str, tuple[str, ...]]]:
    """role -> table -> the privileges a member of its group has on it (the catalog's answer)."""
    tables = [
        t
        for (t,) in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY 1",
            (schema,),
        )
    ]
    found: dict[str, dict[str, tuple[str, ...]]] = {}
    for name, group in groups.items():
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (group,)).fetchone()
        found[name] = {}
        if not exists:
            continue
        for table in tables:
            held = tuple(
                word
                for word in TABLE_PRIVILEGE_WORDS
                if conn.execute(
                    "SELECT has_table_privilege(%s, format('%%I.%%I', %s::text, %s::text), %s)",
                    (group, schema, table, word),
                ).fetchone()[0]
            )
            if held:
                found[name][table] = held
    return found


def access_table(declared: Model, real: Mapping[str, RealRole], app_roles: Mapping[str, Any]) -> str:
    """`make access`: a row per role and table, declared beside real, differences marked."""
    rows = [("role", "table", "declared", "real (a credential can)", "")]
    notes: list[str] = []
    for name in sorted(set(declared) | set(real)):
        want = declared.get(name)
        have = real.get(name)
        tables = sorted(set(want.tables if want else {}) | set(have.tables if have else {}))
        if want and want.access == "migrate":
            rows.append((name, "*", OWNER_ACCESS, "(as the owner)", ""))
            tables = []
        for table in tables:
            declared_words = _joined(want.tables.get(table, ())) if want else ""
            real_words = _joined(have.tables.get(table, ())) if have else "?"
            mark = "" if declared_words == real_words or have is None else "DIFFERS"
            rows.append((name, table, declared_words or "-", real_words or "-", mark))
        if want:
            vault = have.vault_ttls if have else None
            ttl = f"{duration(want.default_ttl)} / {duration(want.max_ttl)}"
            if vault is None:
                vault_text = "(this token may not read the role in Vault)"
            else:
                vault_text = f"{duration(vault[0])} / {duration(vault[1])}"
                if (want.default_ttl, want.max_ttl) != vault and want.default_ttl is not None:
                    vault_text += " DIFFERS"
            login = (app_roles.get(name) or {}).get("loginPath", "?")
            locked = "; locked: Vault issues no credentials" if want.locked else ""
            notes.append(
                f"{name}: TTL (default / max) declared {ttl}, in Vault {vault_text}; AppRole role {name} at "
                f"{login}, {want.secret_id_uses} login(s) per secret-id{locked}"
            )
    widths = [max(len(str(row[i])) for row in rows) for i in range(5)]
    text = [
        "  ".join(f"{cell:<{widths[i]}}" for i, cell in enumerate(row)).rstrip()
        for row in rows[:1] + [tuple("-" * w for w in widths)] + rows[1:]
    ]
    differs = sum(1 for row in rows[1:] if row[4]) + sum(1 for n in notes if "DIFFERS" in n)
    text += [
        "",
        *notes,
        "",
        f"{nobody_gains(declared)}",
        f"access: {differs or 'no'} difference(s) between declared and real",
    ]
    return "\n".join(text)


# --- command line --------------------------------------------------------------


def stack_outputs(stack: str, cwd: Path) -> dict[str, Any] | None:
    """The stack's outputs, or None if it has none yet (never deployed)."""
    done = subprocess.run(
        ["pulumi", "stack", "output", "--json", "--stack", stack, "--cwd", str(cwd), "--non-interactive"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        if "no stack named" in done.stderr or "not found" in done.stderr:
            return None
        raise RuntimeError(
            done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "pulumi stack output failed"
        )
    return json.loads(done.stdout or "{}")


def change_report(stack: str, cwd: Path) -> Report:
    outputs = stack_outputs(stack, cwd)
    after, refused = stack_file_roles(cwd / f"Pulumi.{stack}.yaml")
    return Report(stack, from_outputs(outputs or {}), after, refused, deployed=outputs is not None)


def live_report(stack: str, cwd: Path) -> str:
    import hvac

    from clients.postgres import PostgresUnreachable, connect
    from clients.tls import operator_token, vault_tls_verify

    outputs = stack_outputs(stack, cwd)
    if not outputs or "roleAccess" not in outputs:
        return f"access: stack {stack!r} has no roles deployed (a platform stack, or never deployed): nothing to show"
    declared = from_outputs(outputs)
    groups = {name: group for name, group in (outputs.get("groupRoles") or {}).items()}
    # The session's login (read-only in CI), as the providers log in; libpq reads PGPASSFILE.
    postgres = {
        **outputs["postgres"],
        "user": os.environ.get("PGUSER") or outputs["postgres"].get("adminUser"),
        "password": None,
    }
    schema = (outputs.get("declaredPrivileges") or {}).get("schema", "public")
    try:
        with connect(postgres) as conn:
            catalog = real_access(conn, schema, groups)
    except PostgresUnreachable as error:
        return f"access: {error}"
    vault = hvac.Client(url=outputs["vaultAddress"], token=operator_token(), timeout=30, verify=vault_tls_verify())
    real: dict[str, RealRole] = {}
    for name in declared:
        try:
            data = vault.read(f"{outputs['vaultMountPath']}/roles/{name}")["data"]
            ttls: tuple[int, int] | None = (int(data["default_ttl"]), int(data["max_ttl"]))
        except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidPath, TypeError, KeyError):
            ttls = None
        real[name] = RealRole(catalog.get(name, {}), ttls)
    return f"access on stack {stack}\n\n" + access_table(declared, real, outputs.get("appRoles") or {})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Who gets access on a stack, in plain words.")
    parser.add_argument("--stack", required=True)
    parser.add_argument("--cwd", type=Path, default=REPO, help="the project's folder")
    parser.add_argument(
        "--changes", action="store_true", help="what the stack file changes against what is deployed (Markdown)"
    )
    args = parser.parse_args(argv)
    try:
        if args.changes:
            report = change_report(args.stack, args.cwd)
            print(comment(report), end="")
            return 1 if report.refused else 0
        text = live_report(args.stack, args.cwd)
    except RuntimeError as error:
        print(f"access: {error}", file=sys.stderr)
        return 2
    print(text)
    return 1 if "DIFFERS" in text else 0


if __name__ == "__main__":
    sys.exit(main())
