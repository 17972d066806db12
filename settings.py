"""Stack settings: read once from the `pgcreds:` config namespace (and the few
environment variables that may carry credentials), validated here, returned as
frozen dataclasses. Every error names the setting and the fix, and all of them
are reported together, before any resource is registered.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi import Output

from components.aiven_postgres import AivenPostgresArgs
from components.app_role import TABLE_PRIVILEGES, AppRole
from components.existing_postgres import ExistingPostgresArgs
from components.vault_connections import LOGIN_PREFIX_MAX, VaultConnection, plan_connections
from tables import APP_TABLES, TableSpec

NAMESPACE = "pgcreds"

# PostgreSQL allows more, but a strict pattern keeps every name safe to use in
# SQL, in Vault paths and as a Pulumi resource name.
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
ROLE_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
ROLE_NAME_MAX = 48  # leaves room in Vault's 63-byte usernames
MOUNT_PATH = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]*(?:/[a-zA-Z0-9_-]+)*$")
# Paths Vault (and OpenBao) keep for themselves: a mount there can never work.
VAULT_RESERVED_MOUNTS = ("sys", "auth", "cubbyhole", "identity")
# The token auth method always lives at auth/token.
VAULT_RESERVED_AUTH = ("token",)
# A secret-id is a login secret: bounded in life and in uses.
SECRET_ID_MAX_USES = 100
# Names PostgreSQL keeps (pg_* roles, the PUBLIC pseudo-role, SQL keywords that
# stand for a role) and the bootstrap superuser: never a role of this program.
PG_RESERVED_ROLES = ("public", "none", "all", "current_user", "current_role", "session_user", "user", "postgres")
# The longest lease a credential may have (the policy pack enforces the same in CI).
MAX_TTL_SECONDS = 24 * 3600
# A username template's last action must cut the name to PostgreSQL's 63 bytes.
TEMPLATE_ENDS_TRUNCATED = re.compile(r"\|\s*truncate\s+63\s*\}\}\s*$")
# Newline, tab, NUL and the other control characters: never part of a setting. A
# pattern ending in `$` would let a trailing newline through; every pattern here
# is matched whole (fullmatch), and this check names the setting first.
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
DURATION = re.compile(r"^(?:(\d+)|((?:\d+[smhd])+))$")
DURATION_PART = re.compile(r"(\d+)([smhd])")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

ADMIN_PASSWORD_ENV = "PGCREDS_POSTGRES_ADMIN_PASSWORD"
AIVEN_TOKEN_ENV = "AIVEN_TOKEN"
AIVEN_PLAN = re.compile(r"^(free|hobbyist|startup|business|premium|custom)-\d+(?:-[a-z0-9]+)*$")
AIVEN_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
AIVEN_CLOUD = re.compile(r"^[a-z]+-[a-z0-9-]+$")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

DEFAULT_ROLES = [
    {
        "name": "metrics-readwrite",
        "tables": ["weekly_metrics_reporting"],
        "access": "readwrite",
        "defaultTtl": "1h",
        "maxTtl": "24h",
    }
]


# How grants are made (the `grantLayout` output): one per role and kind of object.
# A stack whose last update has no such output granted per table.
GRANT_LAYOUT = "per-role"

# What a stack holds: the whole graph (the default), or the organisation's split:
# one platform stack (PostgreSQL, the Vault mount, the AppRole auth method) and
# one stack per application (its tables, roles, Vault connection and identities).
STACK_KINDS = ("all", "platform", "application")
# (the bootstrap, which writes the policies, checks the same pattern)
from clients.names import APPLICATION_NAME  # noqa: E402

STACK_REFERENCE = re.compile(r"^(?:[A-Za-z0-9_.-]+/){0,2}[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class StackLayout:
    kind: str
    """One of STACK_KINDS."""
    platform_stack: str | None = None
    """An application stack's platform stack, as a StackReference names it."""
    application: str | None = None
    """An application stack's application name, the prefix of all its names."""


class SettingsError(pulumi.RunError):
    """Invalid stack settings (reported without a Python traceback)."""


@dataclass(frozen=True)
class VaultSettings:
    address: str
    mount_path: str
    connection_name: str
    rotate_root: bool
    """Vault rotates each connection's login password, so only Vault knows it."""
    approle_path: str
    """Path of the AppRole auth method the applications log in with (`auth/<path>`)."""
    connections: tuple[VaultConnection, ...]


@dataclass(frozen=True)
class Settings:
    environment: str
    postgres: ExistingPostgresArgs | AivenPostgresArgs
    """Where PostgreSQL comes from: the Args of the component that provides it."""
    vault: VaultSettings
    roles: tuple[AppRole, ...]
    sample_data: bool
    keep_tables_on_destroy: bool
    owner_role: str
    vault_admin_role: str
    layout: StackLayout = field(default_factory=lambda: StackLayout(STACK_KINDS[0]))
    """Which part of the graph this stack holds (all of it, by default)."""
    per_table_grants_in_state: bool = False
    """The stack's last update was made by a version that granted per table (its
    outputs have no `grantLayout`): AccessRoles lets those grants go without a REVOKE."""
    tables: tuple[TableSpec, ...] = APP_TABLES
    """The tables of `tables.py` this stack makes: all of them, those its roles name
    (an application stack), or none (a platform stack)."""

    @property
    def schema(self) -> str:
        """Where the stack's tables are: `public`, or an application stack's own schema,
        named after the application (its deploy login then manages its grants alone:
        the provider's Grant takes membership of every table owner of a schema)."""
        return self.layout.application if self.layout.kind == "application" and self.layout.application else "public"


def reserved_role(name: str) -> bool:
    return name.startswith("pg_") or name in PG_RESERVED_ROLES


# What a username template may contain, so that every name Vault makes from it is
# letters, digits, _ and - (safe inside the creation and revocation statements'
# quotes): text outside the actions, string arguments (printf formats: %s and %d
# only), and the functions that emit nothing else. `.DisplayName` comes from the
# caller's login and can hold anything; base64 emits + / =; Go's own template
# words (define, call, index, js …) are not needed for a name.
TEMPLATE_SAFE_TEXT = re.compile(r"[A-Za-z0-9_-]*")
TEMPLATE_SAFE_STRING = re.compile(r'"(?:[A-Za-z0-9_-]|%[sd])*"')
TEMPLATE_TOKEN = re.compile(r'\s+|"(?:[^"\\]|\\.)*"|`[^`]*`|\.?[A-Za-z_][A-Za-z0-9_]*|\d+|[|()]|.')
TEMPLATE_WORDS = (
    "printf",
    "random",
    "truncate",
    "truncate_sha256",
    "lowercase",
    "uppercase",
    "replace",
    "sha256",
    "uuid",
    "unix_time",
    "unix_time_millis",
    "timestamp",
    ".RoleName",
)


def username_template_problem(template: Any) -> str | None:
    """Why a Vault username_template is refused, or None. Vault checks the syntax
    only when a credential is issued, and runs whatever name it makes inside the
    statements: only templates that make a safe identifier pass."""
    example = "e.g. '{{ printf \"app_%s_%s\" (random 8) (unix_time) | truncate 63 }}'"
    if not isinstance(template, str) or "{{" not in template:
        return f"must be a Vault username template with at least one {{{{ … }}}} action, {example}"
    depth = 0
    for token in re.findall(r"\{\{|\}\}", template):
        depth += 1 if token == "{{" else -1
        if depth not in (0, 1):
            return f"has unbalanced {{{{ and }}}} in {template!r}; {example}"
    if depth:
        return f"has an {{{{ that is never closed in {template!r}; {example}"
    if not TEMPLATE_ENDS_TRUNCATED.search(template):
        return (
            "must end with '| truncate 63' inside its last {{ … }} (PostgreSQL cuts role names at 63 bytes; "
            f"outside the braces it is plain text); {example}"
        )
    for index, part in enumerate(re.split(r"\{\{|\}\}", template)):
        if index % 2 == 0:  # text outside the actions
            if not TEMPLATE_SAFE_TEXT.fullmatch(part):
                return (
                    f"has the text {part!r} outside its actions: only letters, digits, _ and - may be "
                    f"there, so that every name is a safe identifier; {example}"
                )
            continue
        for token in TEMPLATE_TOKEN.findall(part):
            if token.isspace() or token.isdigit() or token in "|()":
                continue
            if token.startswith('"') and TEMPLATE_SAFE_STRING.fullmatch(token):
                continue
            if token in TEMPLATE_WORDS:
                continue
            if token == ".DisplayName":
                return (
                    "uses .DisplayName, which comes from the caller's Vault login and may hold any "
                    f"character; use .RoleName or random instead; {example}"
                )
            return (
                f"has {token!r} in an action: a template may use only {', '.join(TEMPLATE_WORDS)}, "
                "numbers, and strings of letters, digits, _, - (and %s, %d in printf), so that "
                f"the name Vault makes is a safe identifier; {example}"
            )
    return None


def control_character_problem(value: Any) -> str | None:
    """Why a setting's value (a string, or strings inside lists) is refused for a
    control character, or None."""
    if isinstance(value, list):
        return next(filter(None, map(control_character_problem, value)), None)
    if isinstance(value, str) and CONTROL_CHARACTER.search(value):
        return (
            f"{value!r} contains a control character (newline, tab, NUL …), which no name, path or "
            "address may hold; remove it (a YAML value that ends in a line break does so too)"
        )
    return None


def parse_duration(text: Any) -> int | None:
    """Seconds in a Vault-style duration ('1h', '90m', '1h30m', '3600s', '3600'), or None."""
    match = DURATION.match(str(text).strip()) if isinstance(text, (str, int)) and not isinstance(text, bool) else None
    if not match:
        return None
    if match.group(1):
        return int(match.group(1))
    return sum(int(n) * UNIT_SECONDS[u] for n, u in DURATION_PART.findall(match.group(2)))


class _Problems:
    def __init__(self, prefix: str = f"{NAMESPACE}:", subject: str = "invalid stack settings") -> None:
        self.messages: list[str] = []
        self.prefix = prefix
        """What a setting's name follows in a message: the config namespace, or a component's name."""
        self.subject = subject

    def add(self, key: str, message: str) -> None:
        self.messages.append(f"{self.prefix}{key}: {message}")

    def raise_any(self) -> None:
        """Every problem found so far, together, before anything is changed."""
        if self.messages:
            raise SettingsError(f"{self.subject} (nothing was changed):\n  - " + "\n  - ".join(self.messages))


def parse_settings(
    raw: Mapping[str, Any],
    secret: Callable[[str], Output[str] | None],
    environ: Mapping[str, str],
    stack: str,
    in_clear: Callable[[str], bool] = lambda key: False,
    previous_outputs: Mapping[str, Any] | None = None,
    problems: _Problems | None = None,
) -> Settings:
    """Validates raw config values (strings or parsed JSON, as `pulumi config`
    stores them). `secret(key)` returns a secret config value or None;
    `in_clear(key)` tells whether a value is stored without `--secret`;
    `previous_outputs` are the outputs of the stack's last update; `problems`, a
    caller's findings so far, reported with these (and naming settings its way)."""
    problems = problems if problems is not None else _Problems()
    for key, value in raw.items():
        problem = control_character_problem(value) if key != "roles" else None  # roles: per field, below
        if problem:
            problems.add(key, problem)

    def text(key: str, default: str) -> str:
        value = raw.get(key)
        return default if value is None or value == "" else str(value)

    def boolean(key: str, default: bool) -> bool:
        value = raw.get(key)
        if value is None or value == "":
            return default
        if str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
        problems.add(key, f"must be true or false, not {value!r}")
        return default

    environment = text("environment", "dev" if stack == "dev" else stack)

    # --- PostgreSQL ---------------------------------------------------------
    mode = text("postgresMode", "existing")
    if mode not in ("existing", "aiven"):
        problems.add("postgresMode", f"must be 'existing' or 'aiven', not {mode!r}")
    # Unset, host and port follow libpq's PGHOST and PGPORT (the dev stack: the
    # local server wherever PGCREDS_PG_PORT put it), then 127.0.0.1:5432.
    port_text = text("postgresPort", environ.get("PGPORT") or "5432")
    port = int(port_text) if port_text.isdigit() and 0 < int(port_text) < 65536 else 0
    if not port:
        problems.add("postgresPort", f"must be a TCP port number (1-65535), not {port_text!r}")
    database = text("postgresDatabase", "postgres")
    admin_user = text("postgresAdminUser", "postgres")
    for key, value in (("postgresDatabase", database), ("postgresAdminUser", admin_user)):
        if not IDENTIFIER.fullmatch(value):
            problems.add(key, f"{value!r} is not a plain identifier (lower-case letters, digits, _; max 63)")
    # A managed service is verified against its CA unless told otherwise.
    sslmode = text("postgresSslMode", "verify-full" if mode == "aiven" else "prefer")
    if sslmode not in SSLMODES:
        problems.add("postgresSslMode", f"must be one of {', '.join(SSLMODES)}; got {sslmode!r}")
    elif sslmode == "disable" and environment != "dev":
        problems.add(
            "postgresSslMode",
            f"'disable' sends passwords in clear text and is allowed on the dev "
            f"environment only (this is {environment!r}); use require or verify-full",
        )
    # The CA as a file on Vault's host, for a Vault that reads it only from a file
    # (OpenBao): it goes in the connection URL, so a plain absolute path only.
    vault_sslrootcert = text("vaultSslRootCert", "")
    if vault_sslrootcert and not re.fullmatch(r"/[A-Za-z0-9._/-]{1,255}", vault_sslrootcert):
        problems.add(
            "vaultSslRootCert",
            f"{vault_sslrootcert!r} must be an absolute path on Vault's host, of letters, digits, '.', '_', "
            "'-' and '/' (it goes into Vault's connection URL)",
        )
    # The admin's password is never a setting: a deploy session (deployer/session.py)
    # hands over the login Vault issues in a pgpass file, which every driver reads.
    if secret("postgresAdminPassword") is not None or raw.get("postgresAdminPassword") is not None:
        problems.add(
            "postgresAdminPassword",
            "is no longer read: the program logs in with the login Vault "
            f"issues (`make bootstrap` once, then a deploy session). Remove it: `pulumi config rm "
            f"{NAMESPACE}:postgresAdminPassword`",
        )
    if environ.get(ADMIN_PASSWORD_ENV):
        problems.add(
            "postgresAdminPassword",
            f"{ADMIN_PASSWORD_ENV} is set: a static admin password is not "
            "taken; unset it and let the deploy session hand over Vault's login (PGPASSFILE)",
        )
    # Who logs in: the session's login (PGUSER, PGPASSFILE) on an existing server, and on
    # an Aiven service once `make bootstrap --aiven-stack` handed it over (the setting
    # names the deploy login there); a first-day Aiven stack logs in as the service's admin.
    session_login = mode == "existing" or (mode == "aiven" and bool(raw.get("postgresAdminUser")))
    if session_login and not (environ.get("PGPASSFILE") or environ.get("PGPASSWORD")):
        problems.add(
            "postgresAdminUser",
            f"no login for {admin_user!r}: open a deploy session first "
            '(`. local/dev-env.sh` here, `eval "$(python -m deployer.session)"` in CI), which puts '
            "Vault's short-lived login in the file PGPASSFILE names",
        )
    elif session_login and environ.get("PGPASSFILE") and environ.get("PGPASSWORD"):
        problems.add(
            "postgresAdminUser",
            "PGPASSWORD is set beside the deploy session's PGPASSFILE: libpq prefers "
            "it, so every login would try that password. `unset PGPASSWORD` (sourcing "
            "local/dev-env.sh again does it)",
        )
    elif session_login:
        _check_session_login(environ, admin_user, problems)
    aiven = (
        _parse_aiven(text, boolean, secret, in_clear, environ, stack, environment, sslmode, problems)
        if mode == "aiven"
        else None
    )
    layout = _parse_layout(text, mode, problems)

    # --- Vault --------------------------------------------------------------
    vault_address = text("vaultAddress", environ.get("VAULT_ADDR", ""))
    if not re.fullmatch(r"^https?://[^\s/]+(:\d+)?/?$", vault_address):
        problems.add(
            "vaultAddress",
            "must be the Vault API address such as https://vault.example.com:8200 "
            f"(or set VAULT_ADDR); got {vault_address!r}",
        )
    if not environ.get("VAULT_TOKEN"):
        hint = (
            " (the vault provider reads VAULT_TOKEN, not BAO_TOKEN: export VAULT_TOKEN=$BAO_TOKEN)"
            if environ.get("BAO_TOKEN")
            else ""
        )
        problems.add(
            "vaultAddress",
            f"no Vault token: export VAULT_TOKEN before running pulumi{hint}; the token is never a stack setting",
        )
    mount_path = text("vaultMountPath", "database").strip("/")
    if not MOUNT_PATH.fullmatch(mount_path):
        problems.add("vaultMountPath", f"{mount_path!r} is not a valid mount path (letters, digits, -, _, /)")
    elif mount_path.split("/")[0].lower() in VAULT_RESERVED_MOUNTS:
        problems.add(
            "vaultMountPath",
            f"{mount_path!r} is reserved by Vault ({', '.join(VAULT_RESERVED_MOUNTS)} "
            "and what lies under them); choose a path of your own such as 'database'",
        )
    connection_name = text("vaultConnectionName", "postgresql")  # an application stack's: its name (below)
    if not ROLE_NAME.fullmatch(connection_name):
        problems.add(
            "vaultConnectionName", f"{connection_name!r} must be lower-case letters and digits joined by - or _"
        )
    rotate_root = boolean("vaultRotateRoot", True)
    approle_path = text("vaultAppRolePath", f"{mount_path}-approle").strip("/")
    if not MOUNT_PATH.fullmatch(approle_path):
        problems.add("vaultAppRolePath", f"{approle_path!r} is not a valid auth mount path (letters, digits, -, _, /)")
    elif approle_path.split("/")[0].lower() in VAULT_RESERVED_AUTH:
        problems.add(
            "vaultAppRolePath",
            f"{approle_path!r} is Vault's own token auth method; choose a path of your own such as 'database-approle'",
        )

    # --- roles --------------------------------------------------------------
    owner_role = text("tableOwnerRole", "app_owner")
    vault_admin_role = text("vaultAdminRole", "vault_admin")
    for key, value in (("tableOwnerRole", owner_role), ("vaultAdminRole", vault_admin_role)):
        if not IDENTIFIER.fullmatch(value):
            problems.add(key, f"{value!r} is not a plain identifier (lower-case letters, digits, _; max 63)")
        elif reserved_role(value):
            problems.add(
                key,
                f"{value!r} is a name PostgreSQL reserves (pg_*, {', '.join(PG_RESERVED_ROLES)}); "
                "choose a name of your own",
            )
        elif value == admin_user:
            problems.add(
                key, f"{value!r} is the admin login (postgresAdminUser); the program's roles must be roles of their own"
            )
    if rotate_root and len(vault_admin_role) > LOGIN_PREFIX_MAX:
        problems.add(
            "vaultAdminRole",
            f"{vault_admin_role!r} is longer than {LOGIN_PREFIX_MAX} characters: with "
            "vaultRotateRoot each connection's login is <vaultAdminRole>_<6 hex digits>; use a shorter name",
        )
    if owner_role == vault_admin_role:
        problems.add(
            "vaultAdminRole",
            f"{vault_admin_role!r} is also tableOwnerRole: the table owner must never "
            "log in and Vault's login must own nothing; give them different names",
        )
    if layout.kind == "platform":
        roles = _platform_has_no_roles(raw.get("roles"), problems)
    else:
        roles = _parse_roles(raw.get("roles"), problems, reserved={owner_role, vault_admin_role, admin_user})
    if layout.application:
        _own_names_only(layout.application, roles, owner_role, vault_admin_role, problems)
        # Its connection is named after it, so that its deploy policy can cover it alone.
        connection_name = layout.application

    problems.raise_any()
    connections = plan_connections(
        roles,
        mount_path=mount_path,
        connection_name=connection_name,
        admin_role=vault_admin_role,
        rotate_root=rotate_root,
    )
    if aiven is not None:  # (its messages name Vault's connections to the service)
        aiven = dataclasses.replace(
            aiven, vault_connections=", ".join(f"{mount_path}/config/{plan.name}" for plan in connections)
        )
    return Settings(
        environment=environment,
        postgres=aiven
        or ExistingPostgresArgs(
            host=text("postgresHost", environ.get("PGHOST") or "127.0.0.1"),
            port=port,
            database=database,
            admin_user=admin_user,
            sslmode=sslmode,
            sslrootcert=raw.get("postgresSslRootCert") or None,
            vault_sslrootcert=vault_sslrootcert or None,
        ),
        vault=VaultSettings(
            address=vault_address.rstrip("/"),
            mount_path=mount_path,
            connection_name=connection_name,
            rotate_root=rotate_root,
            approle_path=approle_path,
            connections=connections,
        ),
        roles=roles,
        sample_data=boolean("sampleData", False),
        keep_tables_on_destroy=boolean("keepTablesOnDestroy", True),
        owner_role=owner_role,
        vault_admin_role=vault_admin_role,
        layout=layout,
        per_table_grants_in_state=bool(
            previous_outputs
            and "groupRoles" in previous_outputs
            and previous_outputs.get("grantLayout") != GRANT_LAYOUT
        ),
        tables=stack_tables(layout, roles),
    )


def stack_tables(layout: StackLayout, roles: tuple[AppRole, ...]) -> tuple[TableSpec, ...]:
    if layout.kind == "all":
        return APP_TABLES
    named = {table for role in roles for table in role.tables}
    return tuple(spec for spec in APP_TABLES if spec.name in named)


def _parse_layout(text: Callable[[str, str], str], mode: str, problems: _Problems) -> StackLayout:
    kind = text("stackKind", "all")
    if kind not in STACK_KINDS:
        problems.add("stackKind", f"must be one of {', '.join(STACK_KINDS)}, not {kind!r}")
        return StackLayout("all")
    if kind != "application":
        for key in ("platformStack", "application"):
            if text(key, ""):
                problems.add(
                    key,
                    f"is read by application stacks only (pgcreds:stackKind is {kind!r}): remove it, "
                    "or set pgcreds:stackKind to application",
                )
        return StackLayout(kind)
    platform_stack, application = text("platformStack", ""), text("application", "")
    if not STACK_REFERENCE.fullmatch(platform_stack):
        problems.add(
            "platformStack",
            f"{platform_stack!r} does not name a stack: an application stack reads PostgreSQL "
            "and Vault's mount from its platform stack; set it to <stack> (same project and backend) or "
            "<organization>/<project>/<stack>",
        )
    if not APPLICATION_NAME.fullmatch(application):
        problems.add(
            "application",
            f"{application!r} is not an application name: lower-case letters and digits, "
            "at most 20, starting with a letter (every name of the stack starts with it, e.g. billing)",
        )
    if mode != "existing":
        problems.add(
            "postgresMode",
            f"{mode!r} is the platform stack's choice: an application stack takes "
            "PostgreSQL from pgcreds:platformStack; remove pgcreds:postgresMode here",
        )
    return StackLayout(kind, platform_stack=platform_stack, application=application)


def _platform_has_no_roles(value: Any, problems: _Problems) -> tuple[AppRole, ...]:
    if value not in ([], "[]"):
        problems.add(
            "roles",
            "a platform stack issues no credentials: set pgcreds:roles to [] (each application "
            "stack declares its own roles)",
        )
    return ()


def _check_session_login(environ: Mapping[str, str], admin_user: str, problems: _Problems) -> None:
    """The providers log in as PGUSER (the state records no login name): the deploy
    session's login, which is postgresAdminUser to deploy, and a read-only login of
    its own for a preview, which may not run `up` or `destroy`."""
    login = environ.get("PGUSER", "")
    if not login:
        problems.add(
            "postgresAdminUser",
            f"PGUSER is not set: the program logs in as the deploy session's login "
            f"({admin_user!r} to deploy); open a deploy session first (`. local/dev-env.sh` here, "
            '`eval "$(python -m deployer.session)"` in CI), which sets PGUSER and PGPASSFILE',
        )
    elif login != admin_user and environ.get("PGCREDS_SESSION_KIND") == "preview":
        if not pulumi.runtime.is_dry_run():
            problems.add(
                "postgresAdminUser",
                f"PGUSER {login!r} is a preview session's login, which may only "
                f"read: `up` and `destroy` need a deploy session (`python -m deployer.session` without "
                f"--read-only), which logs in as {admin_user!r}",
            )
    elif login != admin_user:
        problems.add(
            "postgresAdminUser",
            f"PGUSER is {login!r}, but this stack deploys as {admin_user!r}: what it "
            "makes would belong to another login. Open the stack's deploy session (it sets PGUSER), or "
            f"correct {problems.prefix}postgresAdminUser",
        )


def _own_names_only(
    application: str,
    roles: tuple[AppRole, ...],
    owner_role: str,
    vault_admin_role: str,
    problems: _Problems,
    tables: bool = True,
) -> None:
    """An application stack's names all start with its application name: its
    deploy policy covers `<application>-*` in Vault, and no name can be another
    application's (its tables too, unless `tables` is False)."""
    for index, role in enumerate(roles):
        if not role.name.startswith(f"{application}-"):
            problems.add(
                f"roles[{index}].name",
                f"{role.name!r} is not a name of the application {application!r}: "
                f"in its stack every role is named {application}-<something> (e.g. {application}-{role.name})",
            )
    for index, role in enumerate(roles if tables else ()):
        for table in role.tables:
            if not table.startswith(f"{application}_"):
                problems.add(
                    f"roles[{index}].tables",
                    f"{table!r} is not a table of the application "
                    f"{application!r}: in its stack every table is named {application}_<something>, so "
                    "that no application's stack can take or drop another's",
                )
    for key, value in (("tableOwnerRole", owner_role), ("vaultAdminRole", vault_admin_role)):
        if not value.startswith(f"{application}_"):
            problems.add(
                key,
                f"{value!r} is not a name of the application {application!r}: set it to "
                f"{application}_{value} (every PostgreSQL role of its stack starts with {application}_)",
            )


def _parse_aiven(
    text, boolean, secret, in_clear, environ, stack: str, environment: str, sslmode: str, problems: _Problems
) -> AivenPostgresArgs:
    def required(key: str, pattern: re.Pattern, example: str) -> str:
        value = text(key, "")
        if not value:
            problems.add(key, f"is required when postgresMode is 'aiven' (e.g. {example})")
        elif not pattern.fullmatch(value):
            problems.add(key, f"{value!r} is not a valid value (e.g. {example})")
        return value

    project = required("aivenProject", AIVEN_NAME, "my-project")
    cloud = required("aivenCloud", AIVEN_CLOUD, "google-europe-west1")
    plan = text("aivenPlan", "")
    if not plan:
        problems.add("aivenPlan", "is required when postgresMode is 'aiven' (e.g. startup-4)")
    elif not AIVEN_PLAN.fullmatch(plan):
        problems.add(
            "aivenPlan",
            f"{plan!r} is not an Aiven plan name: <tier>-<size> such as hobbyist-1, startup-4 or business-8",
        )
    service_name = text("aivenServiceName", f"pgcreds-{stack}")
    if not AIVEN_NAME.fullmatch(service_name):
        problems.add("aivenServiceName", f"{service_name!r}: lower-case letters, digits and -, starting with a letter")
    pg_version = text("aivenPgVersion", "16")
    if not re.fullmatch(r"^\d{2}$", pg_version):
        problems.add("aivenPgVersion", f"{pg_version!r} is not a PostgreSQL major version such as 16")
    if text("aivenApiUrl", ""):
        problems.add(
            "aivenApiUrl",
            "is no longer read: the aiven provider takes the API address from the "
            "environment; remove the setting and, for an API other than https://api.aiven.io, "
            "export AIVEN_WEB_URL",
        )
    dow, at = text("aivenMaintenanceDow", ""), text("aivenMaintenanceTime", "")
    maintenance = None
    if dow or at:
        if dow not in WEEKDAYS:
            problems.add(
                "aivenMaintenanceDow",
                f"{dow!r}: a maintenance window needs a day, monday .. sunday (and aivenMaintenanceTime)",
            )
        if not re.fullmatch(r"^([01]\d|2[0-3]):[0-5]\d:[0-5]\d$", at):
            problems.add(
                "aivenMaintenanceTime",
                f"{at!r}: a maintenance window needs a start time HH:MM:SS "
                "in UTC such as 03:00:00 (and aivenMaintenanceDow)",
            )
        maintenance = {"dow": dow, "time": at}
    # The long-lived API token lives in Vault alone; each run's deploy session mints a
    # short-lived one from it and exports it (AIVEN_TOKEN), so no stack records one.
    if secret("aivenToken") is not None:
        problems.add(
            "aivenToken",
            "is no longer read: a stack's settings (and so its state) must not hold the long-lived Aiven "
            'token. Move it into Vault once: `make bootstrap BOOTSTRAP_ARGS="… --aiven-token-file <file>"` '
            "(it writes pgcreds-aiven/api, which only the deploy policies may read; each run's deploy "
            f"session mints a 10-minute token from it), then `pulumi config rm {NAMESPACE}:aivenToken`"
            + (" and revoke the token that was written in clear" if in_clear("aivenToken") else ""),
        )
    elif not environ.get(AIVEN_TOKEN_ENV):
        problems.add(
            "aivenToken",
            f"no Aiven API token: {AIVEN_TOKEN_ENV} is exported by the deploy session of a stack in aiven mode "
            '(ci/common.sh, or `eval "$(python -m deployer.session --aiven)"`) from the token the bootstrap '
            "put in Vault (--aiven-token-file)",
        )
    return AivenPostgresArgs(
        project=project,
        cloud=cloud,
        plan=plan,
        service_name=service_name,
        pg_version=pg_version,
        maintenance=maintenance,
        sslmode=sslmode,
        vault_sslrootcert=text("vaultSslRootCert", "") or None,
        deploy_login=text("postgresAdminUser", "") or None,
        termination_protection=boolean("aivenTerminationProtection", environment != "dev"),
    )


def parse_roles(value: Any, reserved: set[str] | None = None) -> tuple[tuple[AppRole, ...], list[str]]:
    """The `roles` setting alone, as `parse_settings` checks it, and what is wrong
    with it (review/access.py: a pull request's access change, and what is refused)."""
    problems = _Problems()
    roles = _parse_roles(value, problems, reserved or set())
    return roles, problems.messages


def _parse_roles(value: Any, problems: _Problems, reserved: set[str]) -> tuple[AppRole, ...]:
    if value is None:
        value = DEFAULT_ROLES
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            problems.add("roles", f"is not valid JSON ({error}); set it as a YAML list in Pulumi.<stack>.yaml")
            return ()
    if not isinstance(value, list) or not value:
        problems.add("roles", "must be a non-empty list of roles ({name, tables, access, defaultTtl, maxTtl})")
        return ()
    sensitive_tables = {t.name for t in APP_TABLES if t.sensitive}
    roles: list[AppRole] = []
    seen: set[str] = set()
    for index, entry in enumerate(value):
        key = f"roles[{index}]"
        if not isinstance(entry, dict):
            problems.add(key, "must be an object with name, tables, access, defaultTtl, maxTtl")
            continue
        for entry_key, entry_value in entry.items():
            problem = control_character_problem(entry_value)
            if problem:
                problems.add(f"{key}.{entry_key}", problem)
        unknown = set(entry) - {
            "name",
            "tables",
            "access",
            "defaultTtl",
            "maxTtl",
            "usernameTemplate",
            "locked",
            "secretIdTtl",
            "secretIdUses",
        }
        if unknown:
            problems.add(key, f"unknown field(s) {', '.join(sorted(unknown))}")
        name = entry.get("name")
        if not isinstance(name, str) or not ROLE_NAME.fullmatch(name) or len(name) > ROLE_NAME_MAX:
            problems.add(
                f"{key}.name",
                f"{name!r} is not a valid role name: lower-case letters and digits joined "
                f"by - or _, at most {ROLE_NAME_MAX} characters (e.g. metrics-readwrite)",
            )
            name = None
        elif name in seen or name.replace("-", "_") in {r.group_role for r in roles}:
            problems.add(f"{key}.name", f"{name!r} is used twice (group role names replace - with _)")
        elif name.replace("-", "_") in reserved:
            problems.add(
                f"{key}.name",
                f"{name!r} would reuse the role {name.replace('-', '_')!r} that the "
                "program already uses for the owner, Vault or the admin; choose another name",
            )
        elif reserved_role(name.replace("-", "_")):
            problems.add(
                f"{key}.name",
                f"{name!r} would make the group role {name.replace('-', '_')!r}, a name "
                f"PostgreSQL reserves (pg_*, {', '.join(PG_RESERVED_ROLES)}); choose another name",
            )
        seen.add(str(name))
        access = entry.get("access")
        if access not in TABLE_PRIVILEGES:
            problems.add(f"{key}.access", f"must be one of {', '.join(TABLE_PRIVILEGES)}, not {access!r}")
        tables = entry.get("tables", [] if access == "migrate" else None)
        if access == "migrate":
            # A migration role works on the whole schema, as the table owner role.
            if tables:
                problems.add(
                    f"{key}.tables",
                    "a migrate role names no tables: its users act as the table owner "
                    "role on the whole schema; remove `tables`",
                )
            tables = []
        elif not isinstance(tables, list) or not tables:
            problems.add(f"{key}.tables", "must be a non-empty list of table names, e.g. [weekly_metrics_reporting]")
            tables = []
        for table in tables:
            if not isinstance(table, str) or not IDENTIFIER.fullmatch(table):
                problems.add(f"{key}.tables", f"{table!r} is not a valid table name (lower-case letters, digits, _)")
            elif table in sensitive_tables:
                problems.add(
                    f"{key}.tables",
                    f"{table!r} is a sensitive table (tables.py): no application role "
                    "may be granted anything on it; remove it from the list",
                )
            # A table tables.py does not make must exist already (made by a migration):
            # checked from the catalog at preview (PgExistingTable), naming this setting.
        if len(set(map(str, tables))) != len(tables):
            problems.add(f"{key}.tables", "lists a table twice")
        default_ttl = parse_duration(entry.get("defaultTtl", "1h"))
        max_ttl = parse_duration(entry.get("maxTtl", "24h"))
        for ttl_key, seconds in (("defaultTtl", default_ttl), ("maxTtl", max_ttl)):
            if not seconds:
                problems.add(
                    f"{key}.{ttl_key}",
                    f"{entry.get(ttl_key)!r} is not a positive duration; write it like 1h, 30m, 1h30m or 3600s",
                )
            elif seconds > MAX_TTL_SECONDS:
                problems.add(
                    f"{key}.{ttl_key}",
                    f"{entry.get(ttl_key)!r} is longer than 24h, the longest a credential "
                    "may live; use 24h or less (and renew, or issue a new one)",
                )
        default_ttl = default_ttl if default_ttl and default_ttl <= MAX_TTL_SECONDS else None
        max_ttl = max_ttl if max_ttl and max_ttl <= MAX_TTL_SECONDS else None
        if default_ttl and max_ttl and default_ttl > max_ttl:
            problems.add(
                f"{key}.defaultTtl",
                f"{entry.get('defaultTtl')!r} is longer than maxTtl "
                f"{entry.get('maxTtl')!r}; lower defaultTtl or raise maxTtl",
            )
        template = entry.get("usernameTemplate")
        if template is not None:
            problem = username_template_problem(template)
            if problem:
                problems.add(f"{key}.usernameTemplate", problem)
        locked = entry.get("locked", False)
        if not isinstance(locked, bool):
            problems.add(f"{key}.locked", f"must be true or false, not {locked!r}")
        secret_id_ttl = parse_duration(entry.get("secretIdTtl", "1h"))
        if not secret_id_ttl or secret_id_ttl > MAX_TTL_SECONDS:
            problems.add(
                f"{key}.secretIdTtl",
                f"{entry.get('secretIdTtl')!r} must be a duration from 1s to 24h "
                "(how long an AppRole secret-id may be used), e.g. 1h",
            )
        secret_id_uses = entry.get("secretIdUses", 1)
        if (
            isinstance(secret_id_uses, bool)
            or not isinstance(secret_id_uses, int)
            or not 1 <= secret_id_uses <= SECRET_ID_MAX_USES
        ):
            problems.add(
                f"{key}.secretIdUses",
                f"{secret_id_uses!r} must be a whole number from 1 to "
                f"{SECRET_ID_MAX_USES} (logins one secret-id allows; unlimited is not offered)",
            )
        if name and isinstance(tables, list) and access in TABLE_PRIVILEGES and default_ttl and max_ttl:
            roles.append(
                AppRole(
                    name=name,
                    tables=tuple(tables),
                    access=access,
                    default_ttl_seconds=default_ttl,
                    max_ttl_seconds=max_ttl,
                    username_template=template,
                    locked=locked is True,
                    secret_id_ttl_seconds=secret_id_ttl or 3600,
                    secret_id_uses=secret_id_uses if isinstance(secret_id_uses, int) else 1,
                )
            )
    return tuple(roles)


def parse_application(raw: Mapping[str, Any], environ: Mapping[str, str], stack: str, component: str) -> Settings:
    """The inputs of the package's ApplicationDatabase component (`raw`, keyed as the
    settings are, plus `application`), checked as a stack's settings are and named
    `<component>.<input>` in messages. One application on a server and a Vault mount
    given directly (no platform stack): its tables in a schema of its own (so that
    `tables.py`'s may be made there under their own names), its Vault connection
    named after it, and every role name starting with it, its owner and Vault login
    by default too; its admin login by default the deploy session's (PGUSER)."""
    problems = _Problems(f"{component}.", subject="invalid inputs")
    application = str(raw.get("application") or "")
    if not APPLICATION_NAME.fullmatch(application):
        problems.add(
            "application",
            f"{application!r} is not an application name: lower-case letters and digits, at most 20, "
            "starting with a letter (its schema, its Vault connection and its roles' names start with it)",
        )
        problems.raise_any()
    if raw.get("vaultMountPath") in (None, ""):
        problems.add("vaultMountPath", "is required: the Vault mount this application's credentials are issued at")
    raw = {
        "postgresAdminUser": environ.get("PGUSER", ""),
        "tableOwnerRole": f"{application}_owner",
        "vaultAdminRole": f"{application}_vault",
        **{key: value for key, value in raw.items() if key != "application" and value is not None},
        "vaultConnectionName": application,
    }
    settings = parse_settings(raw, lambda key: None, environ, stack, problems=problems)
    _own_names_only(application, settings.roles, settings.owner_role, settings.vault_admin_role, problems, tables=False)
    problems.raise_any()
    layout = StackLayout("application", application=application)
    return dataclasses.replace(settings, layout=layout, tables=stack_tables(layout, settings.roles))


KEYS = (
    "aivenApiUrl",
    "aivenProject",
    "aivenCloud",
    "aivenPlan",
    "aivenServiceName",
    "aivenPgVersion",
    "aivenMaintenanceDow",
    "aivenMaintenanceTime",
    "aivenTerminationProtection",
    "environment",
    "postgresMode",
    "postgresHost",
    "postgresPort",
    "postgresDatabase",
    "postgresAdminUser",
    "postgresSslMode",
    "postgresSslRootCert",
    "vaultSslRootCert",
    "vaultAddress",
    "vaultMountPath",
    "vaultConnectionName",
    "vaultRotateRoot",
    "vaultAppRolePath",
    "tableOwnerRole",
    "vaultAdminRole",
    "roles",
    "sampleData",
    "keepTablesOnDestroy",
    "stackKind",
    "platformStack",
    "application",
)


PREVIOUS_OUTPUTS_ATTEMPTS = 5


def previous_outputs() -> dict[str, Any]:
    """The outputs of this stack's last update (none for a new stack), read from the
    backend, as a StackReference would, but before anything is declared. The engine
    may be writing the state file at that moment (measured on the file backend:
    "failed to load checkpoint: EOF"), so a failed read is tried again; if it keeps
    failing, the stack is taken to hold grants per table, the safe guess (they are
    then declared once more and forgotten, never revoked)."""
    stack = f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}"
    for attempt in range(PREVIOUS_OUTPUTS_ATTEMPTS):
        try:
            result = pulumi.runtime.invoke("pulumi:pulumi:readStackOutputs", {"name": stack})
            return dict((result.value or {}).get("outputs") or {})
        except Exception as error:
            problem = str(error)
            time.sleep(0.2 * (attempt + 1))
    pulumi.log.warn(f"could not read this stack's last outputs ({problem}); taking it to hold grants per table")
    return {"groupRoles": {}}


def load_settings() -> Settings:
    """Reads the stack's `pgcreds:` config and the environment, once."""
    config = pulumi.Config(NAMESPACE)
    raw: dict[str, Any] = {key: config.get(key) for key in KEYS}
    # The language host lists the secret keys in PULUMI_CONFIG_SECRET_KEYS.
    secret_keys = set(pulumi.runtime.get_config_secret_keys_env())
    return parse_settings(
        raw,
        config.get_secret,
        os.environ,
        pulumi.get_stack(),
        in_clear=lambda key: (
            config.get(key) is not None
            and f"{NAMESPACE}:{key}" not in secret_keys
            and not pulumi.runtime.is_config_secret(f"{NAMESPACE}:{key}")
        ),
        previous_outputs=previous_outputs(),
    )
