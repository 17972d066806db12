"""Smoke check of a deployed stack, through the Vault HTTP API and a real
PostgreSQL connection: for each role the stack has (or the one named), log in
as the application (AppRole), issue a credential, use it as the role's access
allows (and be refused what it does not), and revoke it.

    pulumi stack output --json | python smoke_check.py [--role metrics-readwrite]

Reads VAULT_TOKEN (or BAO_TOKEN: the operator, who hands the application its
role-id and a fresh secret-id, and revokes the lease at the end) from the
environment; to confirm the dropped role it logs in as the stack's admin with
the deploy session's login (PGPASSFILE). Prints a pass/fail table; exits 1 if any check failed. No
password, secret-id or token is ever printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Any

import hvac
import psycopg
from psycopg import sql

from clients.postgres import connect, scalar
from clients.tls import operator_token, vault_tls_verify
from tables import APP_TABLES

SAMPLE_WEEKS = ("2022-02-25", "2022-03-04", "2022-03-11")


@dataclass
class SmokeReport:
    rows: list[tuple[str, bool, str]] = field(default_factory=list)
    username: str | None = None
    lease_id: str | None = None

    def record(self, check: str, passed: bool, detail: str) -> bool:
        self.rows.append((check, passed, detail))
        return passed

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(ok for _, ok, _ in self.rows)

    def table(self) -> str:
        width = max(len(check) for check, _, _ in self.rows)
        lines = [f"{'check'.ljust(width)}  result  detail", f"{'-' * width}  ------  ------"]
        lines += [f"{check.ljust(width)}  {'PASS' if ok else 'FAIL'}    {detail}" for check, ok, detail in self.rows]
        return "\n".join(lines)


def _connect(postgres: dict[str, Any], user: str, password: str | None) -> psycopg.Connection:
    """Connects as the stack's own resources do (same TLS settings and CA)."""
    return connect({**postgres, "user": user, "password": password})


def _write_check(report: SmokeReport, session: psycopg.Connection, table_name: str, access: str) -> None:
    """A readwrite role inserts a row (rolled back), which also needs the serial
    sequence; a read role is refused the same INSERT."""
    spec = next((t for t in APP_TABLES if t.name == table_name), None)
    if spec is None or not spec.sample_rows:
        return
    insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table_name),
        sql.SQL(", ").join(map(sql.Identifier, spec.sample_columns)),
        sql.SQL(", ").join(sql.Placeholder() * len(spec.sample_columns)),
    )
    try:
        with session.transaction(force_rollback=True):
            session.execute(insert, spec.sample_rows[0])
        report.record(
            f"INSERT {table_name}",
            access == "readwrite",
            "row inserted (rolled back), serial sequence usable"
            if access == "readwrite"
            else "a read role could insert",
        )
    except psycopg.errors.InsufficientPrivilege as error:
        report.record(
            f"INSERT {table_name} denied" if access != "readwrite" else f"INSERT {table_name}",
            access != "readwrite",
            str(error).strip(),
        )
    except psycopg.Error as error:
        report.record(f"INSERT {table_name}", False, str(error).strip())


def _migration_check(report: SmokeReport, session: psycopg.Connection, owner: str | None) -> None:
    """A migration role's user creates a table (rolled back), owned by the table owner role."""
    try:
        with session.transaction(force_rollback=True):
            session.execute("CREATE TABLE pgcreds_smoke_check (id int GENERATED ALWAYS AS IDENTITY)")
            made_by = scalar(session, "SELECT tableowner FROM pg_tables WHERE tablename = 'pgcreds_smoke_check'")
        report.record("CREATE TABLE (rolled back)", made_by == owner, f"owned by {made_by} (expected {owner})")
    except psycopg.Error as error:
        report.record("CREATE TABLE (rolled back)", False, str(error).strip())


def _use_and_revoke(
    report: SmokeReport,
    vault: hvac.Client,
    postgres: dict[str, Any],
    secret: dict,
    tables: list[str],
    access: str,
    forbidden_table: str,
    expect_sample_rows: bool,
    owner: str | None = None,
) -> bool:
    """The checks with the issued credential; True once its lease is revoked."""
    revoked = False
    session = _connect(postgres, secret["data"]["username"], secret["data"]["password"])
    for readable_table in tables:
        rows = session.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(readable_table))).fetchall()
        if expect_sample_rows and readable_table == "weekly_metrics_reporting":
            weeks = {str(r[1].date()) for r in rows}
            report.record(
                f"SELECT {readable_table}",
                set(SAMPLE_WEEKS) <= weeks,
                f"{len(rows)} rows; sample weeks {'present' if set(SAMPLE_WEEKS) <= weeks else 'MISSING'}",
            )
        else:
            report.record(f"SELECT {readable_table}", True, f"{len(rows)} rows")
        _write_check(report, session, readable_table, access)

    if access == "migrate":
        _migration_check(report, session, owner)
    else:
        try:
            # (`schema.table` names one outside the credential's search_path)
            session.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(*forbidden_table.split("."))))
            report.record(f"SELECT {forbidden_table} denied", False, "the query succeeded")
        except psycopg.errors.InsufficientPrivilege as error:
            report.record(f"SELECT {forbidden_table} denied", True, str(error).strip())

    # Revoke while the session is still open: the revocation must end it too.
    vault.sys.revoke_lease(report.lease_id)
    revoked = True
    try:
        session.execute("SELECT 1")
        report.record("open session ended", False, "the session still answers after revocation")
    except psycopg.OperationalError:
        report.record("open session ended", True, "terminated by the revocation statements")
    finally:
        session.close()
    return revoked


def app_login(operator: hvac.Client, paths: dict[str, str]) -> hvac.Client:
    """What an application's launcher does: read the role-id, mint a one-use
    secret-id, and log in with both. Returns a client holding the app's token."""
    role_id = operator.read(paths["roleIdPath"])["data"]["role_id"]
    secret_id = operator.write_data(paths["secretIdPath"])["data"]["secret_id"]
    app = hvac.Client(url=operator.url, timeout=30, verify=vault_tls_verify())
    login = app.adapter.post(f"/v1/{paths['loginPath']}", json={"role_id": role_id, "secret_id": secret_id})
    app.token = login["auth"]["client_token"]
    return app


def stack_roles(outputs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The roles that issue credentials, with their access and tables, from the outputs."""
    locked = set(outputs.get("lockedRoles") or ())
    return {name: access for name, access in sorted((outputs.get("roleAccess") or {}).items()) if name not in locked}


def run_smoke_check(
    outputs: dict[str, Any],
    role: str,
    readable_table: str | None,
    forbidden_table: str,
    expect_sample_rows: bool,
    vault_token: str,
    admin_password: str | None,
) -> SmokeReport:
    """One role's checks: on `readable_table`, or on every table the role has (None)."""
    report = SmokeReport()
    declared = (outputs.get("roleAccess") or {}).get(role) or {"access": "readwrite", "tables": [readable_table]}
    tables = [readable_table] if readable_table else list(declared["tables"])
    postgres = outputs["postgres"]
    vault = hvac.Client(url=outputs["vaultAddress"], token=vault_token, timeout=30, verify=vault_tls_verify())
    mount = outputs["vaultMountPath"]

    try:
        paths = outputs["appRoles"][role]
        app = app_login(vault, paths)
        policies = app.auth.token.lookup_self()["data"]["policies"]
        report.record("AppRole login", True, f"{paths['loginPath']}: token with policies {', '.join(policies)}")
    except Exception as error:
        report.record("AppRole login", False, f"{type(error).__name__}: {str(error).strip()}")
        return report
    try:
        secret = app.secrets.database.generate_credentials(role, mount_point=mount)
    except Exception as error:
        report.record("issue credential", False, f"{mount}/creds/{role}: {error}")
        app.auth.token.revoke_self()
        return report
    report.username, report.lease_id = secret["data"]["username"], secret["lease_id"]
    report.record(
        "issue credential", True, f"user {report.username}, lease {report.lease_id}, ttl {secret['lease_duration']}s"
    )

    revoked = False
    try:
        revoked = _use_and_revoke(
            report,
            vault,
            postgres,
            secret,
            tables,
            declared["access"],
            forbidden_table,
            expect_sample_rows,
            declared.get("owner"),
        )
    except Exception as error:
        report.record("use credential", False, f"{type(error).__name__}: {str(error).strip()}")
    finally:
        # Whatever failed on the way, the lease (and so its user) never stays behind.
        if not revoked:
            vault.sys.revoke_lease(report.lease_id)
        app.auth.token.revoke_self()

    try:
        # As the stack's admin: its password from the deploy session (PGPASSFILE) unless given.
        with _connect(postgres, postgres.get("adminUser", "postgres"), admin_password) as admin:
            left = scalar(admin, "SELECT count(*) FROM pg_roles WHERE rolname = %s", (report.username,))
        report.record("role dropped", left == 0, "no such role in pg_roles" if left == 0 else "role still exists")
    except psycopg.OperationalError as error:
        report.record("role dropped", False, f"cannot look: {str(error).strip()}")
    return report


def read_outputs(path: str) -> dict[str, Any]:
    """Stack outputs JSON from a file, or from standard input for `-`."""
    with sys.stdin if path == "-" else open(path) as source:
        return json.load(source)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", default="", help="check this Vault role only (default: every role of the stack)")
    parser.add_argument("--readable-table", default=None, help="check this table only (default: the role's tables)")
    parser.add_argument(
        "--forbidden-table", default="employee_salary", help="a table the credential must be refused (or schema.table)"
    )
    parser.add_argument("--no-sample-rows", action="store_true", help="do not expect the dev sample rows")
    parser.add_argument("--outputs", default="-", help="stack outputs JSON file (default: standard input)")
    args = parser.parse_args()
    outputs = read_outputs(args.outputs)
    token = operator_token()
    if not token:
        print("smoke check: export VAULT_TOKEN (or BAO_TOKEN) first", file=sys.stderr)
        return 2
    roles = [args.role] if args.role else list(stack_roles(outputs))
    unknown = [role for role in roles if role not in outputs.get("appRoles", {})]
    if unknown or not roles:
        print(
            f"smoke check: the stack has no role {', '.join(unknown) or '(none at all)'}; it has "
            f"{', '.join(sorted(outputs.get('appRoles', {}))) or 'none'}",
            file=sys.stderr,
        )
        return 2
    passed = True
    for role in roles:
        report = run_smoke_check(
            outputs,
            role,
            args.readable_table,
            args.forbidden_table,
            not args.no_sample_rows,
            token,
            admin_password=None,
        )
        access = (outputs.get("roleAccess") or {}).get(role, {}).get("access", "?")
        print(f"role {role} ({access})")
        print(report.table())
        passed = passed and report.passed
    print("smoke check:", "PASSED" if passed else "FAILED")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
