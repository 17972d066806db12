"""Integration helpers and fixtures: the real Pulumi engine (Automation API, file backend in
a temporary folder) against the local PostgreSQL and OpenBao servers.

Each stack gets a copy of the project in a temporary folder, its own database,
mount path and role names, so tests never touch the dev stack or each other.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import psycopg
import pytest
from psycopg import sql
from pulumi import automation as auto

from aiven_standin.server import AivenStandIn
from clients.tls import vault_tls_verify
from deployer import DEPLOYER_LOGIN, DEPLOYER_ROLE, PLATFORM_MOUNT, application_login, transit_key
from deployer.bootstrap import ensure_deploy_login, grant_schema_rights
from program_copy import add_tables, copy_program
from smoke_check import SmokeReport, run_smoke_check
from sourced_env import TEST_SECRETS_PROVIDER, file_backend, sourced_env

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def local_servers() -> None:
    """The toolchain on PATH and both servers running, as `make test` leaves them."""
    for script in ("postgres.sh", "vault-server.sh"):
        subprocess.run([str(REPO / "local" / script), "start"], check=True)
    os.environ.update(sourced_env("local/dev-env.sh"))
    assert shutil.which("pulumi"), "the pulumi CLI is not on PATH after sourcing local/dev-env.sh"


# The login every test stack's program uses: made by the bootstrap, its password
# known only to Vault (the deploy session's PGPASSFILE hands it over).
DEPLOYER = DEPLOYER_LOGIN


def deployer_password() -> str:
    """The deployer's current password, as Vault hands it to a deploy session."""
    return vault().read(f"{PLATFORM_MOUNT}/static-creds/{DEPLOYER_ROLE}")["data"]["password"]


@dataclass(frozen=True)
class PgServer:
    """A local PostgreSQL server: the default one (15, Debian's, bootstrapped for the
    deploy path) or another version started beside it (`local/postgres.sh` with
    PGCREDS_PG_VERSION)."""

    version: str
    port: int
    superuser_password_file: Path

    def connect(self, database: str = "postgres") -> psycopg.Connection:
        """The superuser, for the tests' own checks and clean-up."""
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            dbname=database,
            user="postgres",
            password=self.superuser_password_file.read_text().strip(),
            autocommit=True,
        )


def default_server() -> PgServer:
    return PgServer(
        os.environ.get("PGCREDS_PG_VERSION", "15"),
        int(os.environ["PGPORT"]),
        Path(os.environ["PGCREDS_SUPERUSER_PASSWORD_FILE"]),
    )


def start_server(version: str) -> PgServer:
    """Another PostgreSQL version beside the default one (`local/postgres.sh`), started if it is not running."""
    env = {**os.environ, "PGCREDS_PG_VERSION": version}
    env.pop("PGCREDS_PG_PORT", None)
    subprocess.run([str(REPO / "local" / "postgres.sh"), "start"], env=env, check=True)
    exported = subprocess.run(
        [str(REPO / "local" / "postgres.sh"), "env"], env=env, check=True, capture_output=True, text=True
    ).stdout
    values = dict(part.split("=", 1) for line in exported.splitlines() for part in line.split()[1:])
    return PgServer(version, int(values["PGPORT"]), Path(values["PGCREDS_SUPERUSER_PASSWORD_FILE"]))


def server_with_deployer(version: str, folder: Path) -> tuple[PgServer, dict[str, str], str]:
    """(another version's server, the environment its stacks run with, the admin's password):
    the deployer login is made there as the bootstrap makes it on the default server
    (non-superuser, CREATEROLE and CREATEDB only), its password in a pgpass file."""
    other = start_server(version)
    password = secrets.token_urlsafe(24)
    with other.connect() as superuser:
        exists = superuser.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (DEPLOYER,)).fetchone()
        superuser.execute(
            sql.SQL("{} ROLE {} WITH LOGIN NOSUPERUSER CREATEROLE CREATEDB PASSWORD {}").format(
                sql.SQL("ALTER" if exists else "CREATE"), sql.Identifier(DEPLOYER), sql.Literal(password)
            )
        )
    pgpass = folder / "pgpass"
    pgpass.write_text(f"127.0.0.1:{other.port}:*:{DEPLOYER}:{password}\n")
    pgpass.chmod(0o600)
    return other, {"PGPASSFILE": str(pgpass)}, password


def start_metrics_app(env: dict[str, str], seconds: float, workers: int, stats: Path | None = None) -> subprocess.Popen:
    """The example service (examples/metrics_app on pgcreds-client), started with `env`
    (its PGCREDS_* and Vault variables): its summary goes to `stats`, its output to pipes."""
    return subprocess.Popen(
        [
            sys.executable,
            str(REPO / "examples" / "metrics_app" / "app.py"),
            "--seconds",
            str(seconds),
            "--workers",
            str(workers),
            *(["--stats", str(stats)] if stats else []),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def admin_connect(database: str = "postgres") -> psycopg.Connection:
    """The default server's superuser, for the tests' own checks and clean-up."""
    return default_server().connect(database)


def vault() -> hvac.Client:
    return hvac.Client(url=os.environ["VAULT_ADDR"], token=os.environ["VAULT_TOKEN"], verify=vault_tls_verify())


@dataclass
class ProgramStack:
    """A stack of the real program on its own database, mount and role names."""

    stack: auto.Stack
    project_dir: Path
    suffix: str
    database: str
    state_dir: Path
    server: PgServer = field(default_factory=default_server)

    @property
    def role_name(self) -> str:
        return f"m{self.suffix}-readwrite"

    @property
    def mount(self) -> str:
        return f"it-{self.suffix}"

    @property
    def program_roles(self) -> list[str]:
        """PostgreSQL roles the program itself creates (the Vault logins are
        `it_<suffix>_vault_admin`, followed with rotate-root by `_<digest>`)."""
        with self.server.connect() as admin:
            logins = [
                name
                for (name,) in admin.execute(
                    "SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (f"it\\_{self.suffix}\\_vault\\_admin%",)
                )
            ]
        return [f"it_{self.suffix}_owner", *logins, self.role_name.replace("-", "_")]

    def vault_logins(self) -> list[str]:
        """The logins Vault uses on this stack's connections, from the outputs."""
        return sorted(self.outputs()["vaultLogins"].values())

    def set(self, **values: Any) -> None:
        for key, value in values.items():
            text = value if isinstance(value, str) else json.dumps(value)
            self.stack.set_config(f"pgcreds:{key}", auto.ConfigValue(value=text))

    def roles_config(self, **overrides: Any) -> list[dict]:
        return [
            {
                "name": self.role_name,
                "tables": ["weekly_metrics_reporting"],
                "access": "readwrite",
                "defaultTtl": "1h",
                "maxTtl": "24h",
                **overrides,
            }
        ]

    def resource_count(self) -> int:
        """Resources in the state as `pulumi up` counts them: all but the default
        providers that the engine adds by itself."""
        return sum(
            1
            for r in self.stack.export_stack().deployment.get("resources", [])
            if not (r["type"].startswith("pulumi:providers:") and r["urn"].split("::")[-1].startswith("default"))
        )

    def resource_types(self) -> set[str]:
        return {r["type"] for r in self.stack.export_stack().deployment.get("resources", [])}

    @contextlib.contextmanager
    def environment(self, **variables: str) -> Iterator[None]:
        """Runs the stack's commands with these environment variables, then as before."""
        workspace = self.stack.workspace
        saved = dict(workspace.env_vars)
        workspace.env_vars.update(variables)
        try:
            yield
        finally:
            workspace.env_vars.clear()
            workspace.env_vars.update(saved)

    def run(self, *args: str) -> str:
        """A pulumi CLI command on this stack (what the Automation API does not offer); its stdout."""
        return subprocess.run(
            ["pulumi", *args, "--stack", self.stack.name],
            cwd=self.project_dir,
            env={**os.environ, **self.stack.workspace.env_vars},
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def vault_admin_password(self) -> str:
        """The generated password (the first one, with rotate-root), decrypted from the
        state (`pulumi stack export --show-secrets`)."""
        exported = self.run("stack", "export", "--show-secrets")
        (password,) = [
            r
            for r in json.loads(exported)["deployment"]["resources"]
            if r["type"] == "random:index/randomPassword:RandomPassword"
        ]
        result = password["outputs"]["result"]
        return json.loads(result["plaintext"]) if isinstance(result, dict) else result

    def raw_state(self) -> str:
        """The state file exactly as the backend stores it (export_stack shows secrets decrypted)."""
        return "\n".join(p.read_text() for p in self.state_dir.rglob("*.json"))

    def outputs(self) -> dict[str, Any]:
        return {key: out.value for key, out in self.stack.outputs().items()}

    def smoke_check(self, admin_password: str | None = None) -> SmokeReport:
        """The smoke check against this stack's outputs and its metrics role."""
        return run_smoke_check(
            self.outputs(),
            self.role_name,
            "weekly_metrics_reporting",
            "employee_salary",
            expect_sample_rows=True,
            vault_token=os.environ["VAULT_TOKEN"],
            admin_password=admin_password,
        )


def make_stack(
    tmp_path: Path, env: dict[str, str] | None = None, server: PgServer | None = None, source: Path = REPO
) -> ProgramStack:
    """A stack of the program (or of another version of it, unpacked at `source`)."""
    server = server or default_server()
    suffix = secrets.token_hex(3)
    project_dir = copy_program(tmp_path / "project", source=source)
    state = tmp_path / "state"
    database = f"it_{suffix}"
    with server.connect() as admin:
        # Owned by the deployer, as an application's database would be made for it.
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(DEPLOYER)))
    stack = auto.create_or_select_stack(
        stack_name=f"it{suffix}",
        work_dir=str(project_dir),
        opts=auto.LocalWorkspaceOptions(
            secrets_provider=TEST_SECRETS_PROVIDER, env_vars={**file_backend(state), **(env or {})}
        ),
    )
    test_stack = ProgramStack(stack, project_dir, suffix, database, state, server)
    test_stack.set(
        environment="dev",
        postgresPort=str(server.port),
        postgresDatabase=database,
        postgresAdminUser=DEPLOYER,
        postgresSslMode="disable",
        vaultAddress=os.environ["VAULT_ADDR"],
        vaultMountPath=test_stack.mount,
        tableOwnerRole=f"it_{suffix}_owner",
        vaultAdminRole=f"it_{suffix}_vault_admin",
        sampleData="true",
        keepTablesOnDestroy="false",
        roles=test_stack.roles_config(),
    )
    return test_stack


@dataclass
class SplitStacks:
    """An organisation's split layout on one database and mount: a platform stack and
    one stack per application, all on one file backend (as StackReference needs)."""

    platform: ProgramStack
    applications: dict[str, ProgramStack]
    """By application name."""
    login_passwords: dict[str, str] = field(default_factory=dict)
    """Each application's deploy login's password, by application name."""

    def all(self) -> list[ProgramStack]:
        return [*self.applications.values(), self.platform]


def application_roles(application: str, **overrides: Any) -> list[dict]:
    """An application stack's one role, read-write on its one table."""
    return [
        {
            "name": f"{application}-rw",
            "tables": [f"{application}_items"],
            "access": "readwrite",
            "defaultTtl": "1h",
            "maxTtl": "24h",
            **overrides,
        }
    ]


def make_split(
    tmp_path: Path, count: int, env: dict[str, str] | None = None, server: PgServer | None = None
) -> SplitStacks:
    """A platform and `count` application stacks, each with its own transit key
    (`pgcreds-<stack>`) and, on `server`, each application with its own deploy
    login (`pgcreds_deploy_<application>`, made as the bootstrap makes it; its
    password added to the pgpass file of `env`, the platform's being the deployer's)
    and its tables in its own schema."""
    server = server or default_server()
    suffix = secrets.token_hex(3)
    names = [f"{chr(ord('a') + index)}{suffix}" for index in range(count)]
    project_dir = copy_program(tmp_path / "project")
    add_tables(project_dir, [f"{name}_items" for name in names])
    state, database = tmp_path / "state", f"it_{suffix}"
    with server.connect() as admin:
        # The organisation's database, as the bootstrap's --app-database finds it: no
        # deploy login's own (each gets CONNECT, CREATE and CREATE on `public`).
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        ensure_deploy_login(admin, DEPLOYER, [database])
    with server.connect(database) as admin:
        grant_schema_rights(admin, DEPLOYER)
    passwords = application_logins(server, database, names, Path((env or {}).get("PGPASSFILE", tmp_path / "pgpass")))
    client = vault()

    def stack(name: str, login: str, **settings: Any) -> ProgramStack:
        key = transit_key(name)
        client.secrets.transit.create_key(key, mount_point="transit")
        made = ProgramStack(
            auto.create_or_select_stack(
                stack_name=name,
                work_dir=str(project_dir),
                opts=auto.LocalWorkspaceOptions(
                    secrets_provider=f"hashivault://{key}",
                    env_vars={**file_backend(state), **(env or {}), "PGUSER": login, "PGCREDS_SESSION_KIND": "deploy"},
                ),
            ),
            project_dir,
            suffix,
            database,
            state,
            server,
        )
        made.set(
            environment="dev",
            postgresPort=str(server.port),
            postgresDatabase=database,
            postgresAdminUser=login,
            postgresSslMode="disable",
            vaultAddress=os.environ["VAULT_ADDR"],
            vaultMountPath=made.mount,
            keepTablesOnDestroy="false",
            **settings,
        )
        return made

    platform = stack(f"it{suffix}-platform", DEPLOYER, stackKind="platform", roles=[])
    applications = {
        name: stack(
            f"it{suffix}-{name}",
            application_login(name),
            stackKind="application",
            platformStack=f"it{suffix}-platform",
            application=name,
            tableOwnerRole=f"{name}_owner",
            vaultAdminRole=f"{name}_vault_admin",
            roles=application_roles(name),
        )
        for name in names
    }
    return SplitStacks(platform, applications, passwords)


@contextlib.contextmanager
def split_on_postgres18(tmp_path: Path, count: int) -> Iterator[SplitStacks]:
    """`make_split` on PostgreSQL 18 (a deploy login acts on the roles it made through
    ADMIN OPTION alone there), cleaned up after."""
    (tmp_path / "session").mkdir()
    (tmp_path / "split").mkdir()
    server, env, _ = server_with_deployer("18", tmp_path / "session")
    organisation = make_split(tmp_path / "split", count, env=env, server=server)
    try:
        yield organisation
    finally:
        cleanup_split(organisation)


def application_logins(server: PgServer, database: str, names: list[str], pgpass: Path) -> dict[str, str]:
    """Each application's deploy login on `server`, made as the bootstrap makes it
    (here the Vault platform connection serves the default server, so the password
    is the test's own, in the pgpass file, instead of a Vault static role's)."""
    passwords = {}
    with server.connect() as admin, server.connect(database) as database_admin:
        for name in names:
            login, passwords[name] = application_login(name), secrets.token_urlsafe(24)
            ensure_deploy_login(admin, login, [database])
            admin.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(login), sql.Literal(passwords[name]))
            )
            grant_schema_rights(database_admin, login)
    with pgpass.open("a") as out:
        out.writelines(
            f"127.0.0.1:{server.port}:*:{application_login(name)}:{password}\n" for name, password in passwords.items()
        )
    pgpass.chmod(0o600)
    return passwords


def cleanup_split(split: SplitStacks) -> None:
    """Best effort, as `cleanup`: the applications' stacks first, then the platform's."""
    for test_stack in split.all():
        try:
            test_stack.stack.destroy()
        except auto.CommandError:
            pass
    cleanup(split.platform)
    client = vault()
    for policy in client.sys.list_acl_policies()["data"]["keys"]:
        if policy.startswith(f"{split.platform.mount}-deploy-"):  # the tests' deploy tokens' policies
            client.sys.delete_acl_policy(policy)
    for test_stack in split.all():
        client.write(f"transit/keys/{transit_key(test_stack.stack.name)}/config", deletion_allowed=True)
        client.delete(f"transit/keys/{transit_key(test_stack.stack.name)}")
    with split.platform.server.connect() as admin:
        for name in split.applications:
            roles = [
                r for (r,) in admin.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (f"{name}\\_%",))
            ]
            roles.append(application_login(name))
            for role in roles:
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def cleanup(test_stack: ProgramStack) -> None:
    """Best effort: whatever a failed test left behind goes, so reruns start clean."""
    try:
        test_stack.stack.destroy()
    except auto.CommandError:
        pass
    client = vault()
    if f"{test_stack.mount}/" in client.sys.list_mounted_secrets_engines()["data"]:
        client.sys.disable_secrets_engine(test_stack.mount)
    if f"{test_stack.mount}-approle/" in client.sys.list_auth_methods()["data"]:
        client.sys.disable_auth_method(f"{test_stack.mount}-approle")
    for policy in client.sys.list_acl_policies()["data"]["keys"]:
        if policy.startswith(f"pgcreds-{test_stack.mount}-"):
            client.sys.delete_acl_policy(policy)
    with test_stack.server.connect() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(test_stack.database)))
        for role in test_stack.program_roles:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def new_stack(tmp_path: Path) -> Iterator[ProgramStack]:
    test_stack = make_stack(tmp_path)
    yield test_stack
    cleanup(test_stack)


@pytest.fixture(scope="module")
def deployed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProgramStack]:
    """One stack, deployed once, shared by the tests of a module."""
    test_stack = make_stack(tmp_path_factory.mktemp("deployed"))
    test_stack.stack.up()
    yield test_stack
    cleanup(test_stack)


# --- Aiven: the stand-in of its API (tests/aiven_standin) and stacks in aiven mode ---

PROJECT = "pgcreds-test"


def start_stand_in(pg_host: str = "127.0.0.1", pg_port: int = 0) -> AivenStandIn:
    """A stand-in whose services report `pg_host`:`pg_port` (default: the local server)."""
    return AivenStandIn(
        PROJECT,
        token=secrets.token_urlsafe(16),
        pg_host=pg_host,
        pg_port=pg_port or int(os.environ["PGPORT"]),
        ca_pem=Path(os.environ["PGCREDS_TEST_CA"]).read_text(),
        superuser=admin_connect,
    ).start()


def stop_stand_in(server: AivenStandIn) -> None:
    for service in list(server.services.values()):
        service.termination_protection = False
        server.delete(service)
    server.stop()


def to_aiven(stack: ProgramStack, **overrides: str) -> None:
    """The stack in aiven mode, first-day: no postgresAdminUser, so the program logs in
    as the service's admin (a stack `make bootstrap --aiven-stack` handed over names
    its deploy login there)."""
    stack.set(**aiven_settings(stack, **overrides))
    stack.stack.remove_config("pgcreds:postgresAdminUser")


def aiven_settings(stack: ProgramStack, **overrides: str) -> dict[str, str]:
    return {
        "postgresMode": "aiven",
        "postgresSslMode": "verify-full",
        "aivenProject": PROJECT,
        "aivenCloud": "google-europe-west1",
        "aivenPlan": "startup-4",
        "aivenServiceName": f"pg-{stack.suffix}",
        "aivenPgVersion": "16",
        "aivenMaintenanceDow": "sunday",
        "aivenMaintenanceTime": "03:00:00",
        **overrides,
    }


@pytest.fixture(scope="module")
def stand_in() -> Iterator[AivenStandIn]:
    """A module's Aiven stand-in, its services on the local server."""
    server = start_stand_in()
    yield server
    stop_stand_in(server)
