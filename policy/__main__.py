"""Policy pack: guardrails that stop a change weakening the security model.

Run with `pulumi preview --policy-pack policy` (CI does, on every pull
request). Every policy is mandatory. Whether a stack is "dev" is read from the
stack name in each resource's URN (the pack sees no stack config); the
`devStacks` setting of a policy lists the names that count as dev.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

DYNAMIC = "pulumi-python:dynamic/"
VAULT_ROLE = "vault:database/secretBackendRole:SecretBackendRole"
VAULT_CONNECTION = "vault:database/secretBackendConnection:SecretBackendConnection"
GRANT = "postgresql:index/grant:Grant"
POSTGRES_PROVIDER = "pulumi:providers:postgresql"
AIVEN_PG = "aiven:index/pg:Pg"
PRIVILEGE_AUDIT = "pulumi-python:dynamic/postgresql:PrivilegeAudit"
MAX_TTL_SECONDS = 24 * 3600
TEMPLATED_USERINFO = "{{username}}:{{password}}"


DEV_STACKS_SCHEMA = PolicyConfigSchema(
    properties={
        "devStacks": {"type": "array", "items": {"type": "string"}, "default": ["dev"]},
    }
)


def stack_of(args: ResourceValidationArgs) -> str:
    """The stack name, from a URN of the form urn:pulumi:<stack>::<project>::..."""
    return args.urn.split(":", 3)[2].split("::")[0] if args.urn.startswith("urn:pulumi:") else ""


def on_dev(args: ResourceValidationArgs) -> bool:
    return stack_of(args) in ((args.get_config() or {}).get("devStacks") or ["dev"])


def prop(props: Any, name: str, default: Any = None) -> Any:
    """A property by its Python name or by the schema's camelCase name (which
    is what the engine hands a policy pack for provider resources)."""
    camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
    if not hasattr(props, "get"):
        return default
    value = props.get(name, props.get(camel))
    return default if value is None else value


def for_type(resource_type: str, check: Callable[[dict, ResourceValidationArgs, ReportViolation], None]):
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type == resource_type:
            check(dict(args.props), args, report_violation)

    return validate


def _ttl_limits(props: dict, _args, report: ReportViolation) -> None:
    max_ttl, default_ttl = int(prop(props, "max_ttl", 0)), int(prop(props, "default_ttl", 0))
    if not 0 < max_ttl <= MAX_TTL_SECONDS:
        report(
            f"Vault role {props.get('name')!r}: max_ttl is {max_ttl}s; it must be at most 24h "
            f"({MAX_TTL_SECONDS}s). Lower maxTtl in pgcreds:roles."
        )
    if default_ttl > max_ttl:
        report(f"Vault role {props.get('name')!r}: default_ttl {default_ttl}s exceeds max_ttl {max_ttl}s.")


def _credentials_expire(props: dict, _args, report: ReportViolation) -> None:
    statements = prop(props, "creation_statements", [])
    if not any("VALID UNTIL '{{expiration}}'" in statement for statement in statements):
        report(
            f"Vault role {props.get('name')!r}: its creation statements must create the user with "
            "VALID UNTIL '{{expiration}}', so that PostgreSQL itself ends the login when the lease does."
        )


def _userinfo(url: str) -> str:
    match = re.match(r"^[a-z]+://([^@/]*)@", url)
    return match.group(1) if match else ""


def _connection_url(props: dict) -> str:
    """A Vault connection's URL (inside its `postgresql` block)."""
    return str(prop(prop(props, "postgresql", {}), "connection_url", ""))


def _no_credentials_in_url(props: dict, _args, report: ReportViolation) -> None:
    url = _connection_url(props)
    userinfo = _userinfo(url)
    if (userinfo and userinfo != TEMPLATED_USERINFO) or re.search(r"[?&]password=", url):
        report(
            f"Vault connection {props.get('name')!r}: connection_url carries credentials; use "
            f"'{TEMPLATED_USERINFO}@' and give username and password in their own fields."
        )


def _no_sensitive_grants(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    sensitive = (args.get_config() or {}).get("sensitiveTables") or ["employee_salary"]
    objects = list(prop(props, "objects", []))
    kind = str(prop(props, "object_type", "")).lower()
    if kind == "table" and not objects:
        report(
            f"group role {props.get('role')!r}: a table grant without `objects` covers every table in the "
            "schema, sensitive ones included; name the tables."
        )
    for table in objects:
        if kind == "table" and table in sensitive:
            report(f"group role {props.get('role')!r} may not be granted anything on the sensitive table {table!r}.")


def _aiven_termination_protection(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != AIVEN_PG:
        return
    props = dict(args.props)
    if not on_dev(args) and not prop(props, "termination_protection"):
        name = prop(props, "service_name")
        report(f"Aiven service {name!r}: termination_protection must be on outside dev (stack {stack_of(args)!r}).")


def _no_sslmode_disable(props: dict, args: ResourceValidationArgs, report: ReportViolation) -> None:
    if on_dev(args):
        return
    url = _connection_url(props)
    # `connection` (of the table resources) is a secret input: the pack sees it
    # through a read-only mapping proxy. A postgresql provider has `sslmode` itself.
    sslmode = prop(props.get("connection") or {}, "sslmode") or props.get("sslmode")
    if re.search(r"[?&]sslmode=disable\b", url) or sslmode == "disable":
        report(
            f"{args.name}: sslmode=disable sends passwords in clear text; it is allowed on dev only "
            f"(stack {stack_of(args)!r}). Use require or verify-full."
        )


def _no_undeclared_privileges(props: dict, _args, report: ReportViolation) -> None:
    undeclared = list(props.get("undeclared") or [])
    if undeclared:
        report(
            f"the stack's roles hold {len(undeclared)} privilege(s) that the settings do not declare (granted "
            "by hand?): " + "; ".join(undeclared) + ". `pulumi up` revokes them; if one is meant, declare it "
            "in pgcreds:roles."
        )


def _every_type(check):
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type.startswith(DYNAMIC) or args.resource_type in (VAULT_CONNECTION, POSTGRES_PROVIDER):
            check(dict(args.props), args, report_violation)

    return validate


PolicyPack(
    name="pgcreds-guardrails",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        ResourceValidationPolicy(
            name="vault-role-ttl-limits",
            description="A Vault role's max_ttl is at most 24h and its default_ttl at most its max_ttl.",
            validate=for_type(VAULT_ROLE, _ttl_limits),
        ),
        ResourceValidationPolicy(
            name="vault-role-credentials-expire",
            description="Creation statements create users VALID UNTIL '{{expiration}}'.",
            validate=for_type(VAULT_ROLE, _credentials_expire),
        ),
        ResourceValidationPolicy(
            name="no-credentials-in-connection-url",
            description="A Vault connection_url holds no username or password, only {{username}}:{{password}}.",
            validate=for_type(VAULT_CONNECTION, _no_credentials_in_url),
        ),
        ResourceValidationPolicy(
            name="no-grants-on-sensitive-tables",
            description="No application group role gets any privilege on a sensitive table.",
            validate=for_type(GRANT, _no_sensitive_grants),
            config_schema=PolicyConfigSchema(
                properties={
                    "sensitiveTables": {"type": "array", "items": {"type": "string"}, "default": ["employee_salary"]},
                }
            ),
        ),
        ResourceValidationPolicy(
            name="no-undeclared-privileges",
            description="The stack's roles hold no privilege beyond their settings (listed in a preview; "
            "`up` revokes them).",
            validate=for_type(PRIVILEGE_AUDIT, _no_undeclared_privileges),
        ),
        ResourceValidationPolicy(
            name="aiven-termination-protection",
            description="Aiven for PostgreSQL services outside dev have termination protection.",
            validate=_aiven_termination_protection,
            config_schema=DEV_STACKS_SCHEMA,
        ),
        ResourceValidationPolicy(
            name="no-sslmode-disable-outside-dev",
            description="No connection uses sslmode=disable outside the dev environment.",
            validate=_every_type(_no_sslmode_disable),
            config_schema=DEV_STACKS_SCHEMA,
        ),
    ],
)
