"""PrivilegeAudit: the privileges this stack's roles hold beyond what its
settings declare (`clients.privilege_audit`), which `pulumi_postgresql` cannot
see: its Grant resources read back only the objects they name.

Every preview reads the catalog (in `check`) and puts what it finds in the
resource's `undeclared` input, so the preview lists it as a change, and the
policy pack's `no-undeclared-privileges` fails a pull request's preview on it.
`up` (and a refresh) ask the catalog in `diff`; `up` then revokes it, after the stack's own grants are in place, and audits
again: what the admin login may not revoke (a superuser's grant on a
superuser's object) stops the `up` with the statements a superuser must run.
"""

from __future__ import annotations

from typing import Any

from pulumi import Input, Output, ResourceOptions
from pulumi.dynamic import CheckResult, CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

from providers._shared import lazy_module
from providers.postgres import replaced_keys

audit = lazy_module("clients.privilege_audit")
pg = lazy_module("providers.pg_sql")


class UndeclaredPrivilegesKept(Exception):
    """`up` found what the admin login may not take back (a superuser's grant on a
    superuser's object, an object a user owns): a person must act."""


class _PrivilegeAuditProvider(ResourceProvider):
    """`undeclared` is filled in a preview only (the `preview` input), so that
    what a past `up` revoked is never left in the recorded inputs; `up` and a
    refresh ask the catalog in `diff`."""

    def _found(self, props: dict, olds: dict | None = None) -> list[str]:
        declared = audit.Declared.from_dict(props["declared"])
        # While a change is planned, what the old settings grant is not "undeclared":
        # the stack's own Grant resources take it back.
        if olds and isinstance(olds.get("declared"), dict):
            declared = declared.union(audit.Declared.from_dict(olds["declared"]))
        try:
            with pg.connect(props["connection"]) as conn:
                return [str(f) for f in audit.audit(conn, declared)]
        except pg.PostgresUnreachable:
            return []  # the providers report the server

    def check(self, olds: dict, news: dict) -> CheckResult:
        if (
            not news.get("preview")
            or not isinstance(news.get("connection"), dict)
            or not isinstance(news.get("declared"), dict)
        ):
            return CheckResult({**news, "undeclared": []}, [])  # `up`, or a server not known yet
        return CheckResult({**news, "undeclared": self._found(news, olds)}, [])

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        # Another server (or database): made again there, like the stack's other objects.
        moved = replaced_keys(olds, news, ())
        if moved:
            return DiffResult(changes=True, replaces=moved, delete_before_replace=False)
        if olds.get("declared") != news.get("declared") or news.get("undeclared"):
            changes = True
        else:
            changes = not news.get("preview") and isinstance(news.get("connection"), dict) and bool(self._found(news))
        return DiffResult(changes=changes, replaces=[], delete_before_replace=False)

    def _take_back(self, props: dict) -> dict[str, Any]:
        declared = audit.Declared.from_dict(props["declared"])
        with pg.connect(props["connection"]) as conn:
            found = audit.audit(conn, declared)
            audit.take_back(conn, found)
            kept = audit.audit(conn, declared)
        if kept:
            statements = [f.statement for f in kept if f.statement]
            raise UndeclaredPrivilegesKept(
                "PostgreSQL kept what the settings do not declare, which the admin login "
                f"({declared.admin_user}) may not take back:\n  - "
                + "\n  - ".join(map(str, kept))
                + ("\nA superuser must run:\n  " + ";\n  ".join(statements) + ";" if statements else "")
            )
        return {**props, "preview": False, "undeclared": [], "revoked": [str(f) for f in found]}

    def create(self, props: dict) -> CreateResult:
        return CreateResult(f"privileges-{props['declared']['database']}", self._take_back(props))

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        return UpdateResult(self._take_back(news))


class PrivilegeAudit(Resource, module="postgresql", name="PrivilegeAudit"):
    """Finds (preview) and revokes (`up`) what the stack's roles hold beyond `declared`."""

    undeclared: Output[list]
    revoked: Output[list]

    def __init__(
        self,
        resource_name: str,
        *,
        declared: Input[dict],
        connection: Input[dict],
        preview: bool,
        opts: ResourceOptions | None = None,
    ):
        super().__init__(
            _PrivilegeAuditProvider(),
            resource_name,
            {"declared": declared, "connection": connection, "preview": preview, "undeclared": [], "revoked": []},
            opts,
        )
