"""Timings of the program's lifecycle against the raw baseline, and of credential issuance.

Prints figures (median of N runs) and asserts nothing: these machines are
shared and noisy. Run with `make bench`. Each shape runs on its own copy of
the program, database, mount and role names, with its own file backend, so
the dev stack is left alone:

  dev     the dev stack's shape: 1 role, 2 tables
  gen20   a generated stack: 20 roles over 40 tables (2 each)
  wide50  1 role over 50 tables (only for the credential issue time)

The raw baseline makes the same objects with one `psql` call and plain `bao`
calls (what a shell script would do), then removes them.

With `--baseline <git revision>` (`make bench` passes the revision before the
fixed-cost work), the program at that revision runs beside the current one, in
turns, on the same toolchain, virtualenv and servers: a no-op preview cut into
phases (from the engine's log) and up / preview / destroy, before and after.

First, a load run on the dev shape (loopback only, bounded in count and
time): 500 credentials issued by 8 concurrent AppRole clients, each logging in
to PostgreSQL and inserting a row, then every lease revoked; errors, rows,
p50 / p99 issue latency, credentials per second, revoke time, users left.
`--only-load` stops after it.

Last, the generated organisation at 10, 30 and 100 roles (`--scales`), as one
stack and split into a platform stack and one stack per application
(`bench/scale.py`): cold up, the no-op preview and the up of a one-role change,
destroy, state size by kind of resource. `--only-scale` runs it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import hvac

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))
import scale  # noqa: E402
from clients.tls import vault_tls_verify  # noqa: E402
from commands import engine_log, psql, timed  # noqa: E402
from deployer import DEPLOYER_LOGIN as DEPLOYER  # noqa: E402
from program_copy import GENERATED_COLUMNS, checkout, copy_program  # noqa: E402
from sourced_env import sourced_env, superuser_password  # noqa: E402

CREATION = (
    "CREATE ROLE \"{{{{name}}}}\" WITH LOGIN PASSWORD '{{{{password}}}}' "
    "VALID UNTIL '{{{{expiration}}}}' IN ROLE \"{group}\";"
)


@dataclass(frozen=True)
class Shape:
    name: str
    roles: int
    tables: int
    tables_per_role: int

    def table_names(self) -> list[str]:
        if self.name == "dev":
            return ["weekly_metrics_reporting", "employee_salary"]
        return [f"t{index:02d}" for index in range(self.tables)]

    def role_tables(self, prefix: str) -> list[tuple[str, list[str]]]:
        """(role name, its tables); names start with `prefix` so that they never
        meet the dev stack's (group roles are global to the server)."""
        if self.name == "dev":
            return [(f"{prefix}-readwrite", ["weekly_metrics_reporting"])]
        names = self.table_names()
        return [
            (
                f"{prefix}-r{index:02d}",
                [names[(index * self.tables_per_role + k) % len(names)] for k in range(self.tables_per_role)],
            )
            for index in range(self.roles)
        ]


SHAPES = (Shape("dev", 1, 2, 1), Shape("gen20", 20, 40, 2), Shape("wide50", 1, 50, 50))


def baseline_env(source: Path) -> dict[str, str]:
    """The environment an unpacked revision's own local/dev-env.sh sets up, with the
    plugin bundles where the current toolchain found them."""
    plugins = os.environ.get("PGCREDS_PLUGINS_DIR") or str(REPO.parent / "shared" / "plugins")
    # Without the current backend URL: that revision's dev-env.sh runs `mkdir -p` on
    # it minus `file://`, which made a `postgres:/…` folder tree in the working
    # directory. The bench gives each run a backend of its own anyway.
    return sourced_env(
        source / "local" / "dev-env.sh", unset=("PULUMI_BACKEND_URL",), extra={"PGCREDS_PLUGINS_DIR": plugins}
    )


class ProgramRun:
    """A copy of the program for one shape, on its own database and backend."""

    def __init__(self, shape: Shape, folder: Path, source: Path = REPO, env: dict[str, str] | None = None):
        self.shape, self.suffix, self.source = shape, secrets.token_hex(3), source
        self.database, self.mount = f"bench_{shape.name}_{self.suffix}", f"bench-{shape.name}-{self.suffix}"
        folder.mkdir(parents=True)
        self.project = copy_program(folder / "project", source=source)
        if shape.name != "dev":
            (self.project / "tables.py").write_text(self._generated_tables())
        self.stack = f"bench-{shape.name}-{self.suffix}"
        self.deploy_path = (source / "deployer").is_dir()
        if self.deploy_path:
            # The team backend (the state database, its login from Vault) and transit.
            self.env = {**os.environ, **(env or {})}
            psql(f'CREATE DATABASE "{self.database}" OWNER {DEPLOYER}')
            timed(
                [
                    "pulumi",
                    "stack",
                    "init",
                    self.stack,
                    "--secrets-provider",
                    "hashivault://pgcreds-tests",
                    "--non-interactive",
                ],
                self.project,
                self.env,
            )
        else:
            # As that revision ran (before the deploy path): the environment its own
            # local/dev-env.sh sets up (a passphrase, the superuser's password), on a file backend.
            (folder / "state").mkdir(mode=0o700)
            self.env = {**os.environ, **baseline_env(source), "PULUMI_BACKEND_URL": f"file://{folder / 'state'}"}
            psql(f'CREATE DATABASE "{self.database}"')
            timed(["pulumi", "stack", "init", self.stack, "--non-interactive"], self.project, self.env)
        roles = [
            {"name": f"{name}", "tables": tables, "access": "readwrite", "defaultTtl": "1h", "maxTtl": "24h"}
            for name, tables in shape.role_tables(f"b{self.suffix}")
        ]
        config = {
            "environment": "dev",
            "postgresPort": os.environ["PGPORT"],
            "postgresDatabase": self.database,
            "postgresSslMode": "disable",
            "vaultAddress": os.environ["VAULT_ADDR"],
            "vaultMountPath": self.mount,
            "tableOwnerRole": f"bench_{self.suffix}_owner",
            "vaultAdminRole": f"bench_{self.suffix}_vault_admin",
            "sampleData": "true",
            "keepTablesOnDestroy": "false",
            "roles": json.dumps(roles),
            **({"postgresAdminUser": DEPLOYER} if self.deploy_path else {}),
        }
        for key, value in config.items():
            self.pulumi("config", "set", f"pgcreds:{key}", value)

    def _generated_tables(self) -> str:
        original = (self.source / "tables.py").read_text()
        names = self.shape.table_names()
        specs = ", ".join(f'TableSpec(name="{name}", columns={GENERATED_COLUMNS})' for name in names)
        # Keep the sensitive table (the settings refuse grants on it) beside the generated ones.
        return original + f"\nAPP_TABLES = ({specs}, EMPLOYEE_SALARY)\n"

    def pulumi(self, *args: str) -> float:
        return timed(["pulumi", *args, "--stack", self.stack, "--non-interactive"], self.project, self.env)

    def remove(self) -> None:
        subprocess.run(
            ["pulumi", "destroy", "--yes", "--skip-preview", "--stack", self.stack],
            cwd=self.project,
            env=self.env,
            capture_output=True,
        )
        subprocess.run(
            ["pulumi", "stack", "rm", "--yes", "--force", "--stack", self.stack],
            cwd=self.project,
            env=self.env,
            capture_output=True,
        )
        psql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


# Where a no-op preview spends its time, from the engine's own log (`-v=7`, one
# JSON object a line): (phase, message that ends it), in order. The last phase
# ends when the `pulumi` process does.
PHASE_MARKS = (
    ("CLI start; host start; runtime metadata", "GetRequiredPackages(root="),
    ("GetRequiredPackages", ") success: #versions="),
    ("engine: plugins resolved, program launched", "langhost[python].Run("),
    ("python start, import pulumi, Stack registers", "registering resource: ty=pulumi:pulumi:Stack"),
    ("program imports, settings, preview checks", "registering resource: ty=pgcreds:"),
    ("providers start; resources register and diff", "step executor has completed"),
    ("program exit (interpreter teardown)", "Program exited"),
    ("plugins stop, CLI exit", None),
)


def phase_breakdown(project: Path, env: dict[str, str], stack: str) -> list[tuple[str, float]]:
    """One no-op `pulumi preview` of `stack` in `project`, cut into PHASE_MARKS."""
    started = time.perf_counter()
    done = subprocess.run(
        ["pulumi", "preview", "--stack", stack, "--non-interactive", "--logtostderr", "-v=7"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    total = time.perf_counter() - started
    events = list(engine_log(done.stderr))
    # The log starts a few milliseconds after the process: counted in the first phase.
    first = events[0][0]
    ends, at = [], 0.0
    for _, mark in PHASE_MARKS[:-1]:
        at = next((t - first for t, msg in events if mark in msg and t - first > at), at)
        ends.append(at)
    ends.append(total)
    return [(name, end - begin) for (name, _), begin, end in zip(PHASE_MARKS, [0.0, *ends], ends)]


def median_phases(runs: list[list[tuple[str, float]]]) -> list[tuple[str, float]]:
    return [(name, statistics.median(run[index][1] for run in runs)) for index, (name, _) in enumerate(runs[0])]


def raw_script(shape: Shape, suffix: str, database: str, mount: str) -> tuple[str, str]:
    """The same objects as the program makes, by hand: (create script, remove script)."""
    owner, admin = f"raw_{suffix}_owner", f"raw_{suffix}_vault_admin"
    password = secrets.token_urlsafe(24)
    sql = [f'CREATE ROLE "{owner}" NOLOGIN', f"CREATE ROLE \"{admin}\" LOGIN CREATEROLE PASSWORD '{password}'"]
    for table in shape.table_names():
        sql += [
            f'CREATE TABLE "{table}" (id serial PRIMARY KEY, value int NOT NULL)',
            f'ALTER TABLE "{table}" OWNER TO "{owner}"',
        ]
    bao = [f"bao secrets enable -path={mount} database"]
    role_names = []
    for name, tables in shape.role_tables(f"x{suffix}"):
        group = f"raw_{suffix}_{name.replace('-', '_')}"
        role_names.append(name)
        sql += [
            f'CREATE ROLE "{group}" NOLOGIN',
            f'GRANT SELECT, INSERT, UPDATE, DELETE ON {", ".join(chr(34) + t + chr(34) for t in tables)} TO "{group}"',
            f'GRANT USAGE, SELECT ON SEQUENCE {", ".join(chr(34) + t + "_id_seq" + chr(34) for t in tables)} TO "{group}"',
            f'GRANT "{group}" TO "{admin}" WITH ADMIN OPTION',
        ]
        bao.append(
            f"bao write {mount}/roles/{name} db_name=postgresql default_ttl=1h max_ttl=24h "
            f"creation_statements={shlex.quote(CREATION.format(group=group))}"
        )
    url = f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{os.environ['PGPORT']}/{database}?sslmode=disable"
    bao.insert(
        1,
        f"bao write {mount}/config/postgresql plugin_name=postgresql-database-plugin "
        f"connection_url={shlex.quote(url)} username={admin} password={password} "
        f"allowed_roles={','.join(role_names)}",
    )
    psql_call = f"psql -q -v ON_ERROR_STOP=1 -d {database} -c {shlex.quote('; '.join(sql))}"
    create = "\n".join(["set -e", psql_call, *bao])
    groups = ", ".join(f'"raw_{suffix}_{n.replace("-", "_")}"' for n in role_names)
    drop = (
        f"DROP TABLE {', '.join(chr(34) + t + chr(34) for t in shape.table_names())}; "
        f'REASSIGN OWNED BY "{admin}" TO CURRENT_USER; DROP OWNED BY "{admin}"; '
        f'DROP ROLE {groups}, "{admin}", "{owner}"'
    )
    remove = "\n".join(
        [
            "set -e",
            f"bao lease revoke -prefix {mount}/",
            f"bao secrets disable {mount}",
            f"psql -q -v ON_ERROR_STOP=1 -d {database} -c {shlex.quote(drop)}",
        ]
    )
    return create, remove


def raw_baseline(shape: Shape) -> tuple[float, float]:
    suffix = secrets.token_hex(3)
    database, mount = f"raw_{shape.name}_{suffix}", f"raw-{shape.name}-{suffix}"
    psql(f'CREATE DATABASE "{database}"')
    env = {
        **os.environ,
        "PGUSER": "postgres",
        "PGPASSWORD": superuser_password(),
        "PATH": f"{REPO / 'venv' / 'bin'}:{os.environ['PATH']}",
    }
    create, remove = raw_script(shape, suffix, database, mount)
    try:
        up = timed(["bash", "-c", create], REPO, env)
        down = timed(["bash", "-c", remove], REPO, env)
    finally:
        psql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return up, down


def issue_times(client: hvac.Client, mount: str, role: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        client.secrets.database.generate_credentials(role, mount_point=mount)
        times.append((time.perf_counter() - started) * 1000)
    client.sys.revoke_prefix(f"{mount}/creds/{role}")
    return times


def load(program: ProgramRun, client: hvac.Client, count: int, clients: int, limit_seconds: float) -> dict:
    """`count` credentials issued by `clients` concurrent applications, each logged
    in with its own AppRole secret-id; every credential logs in to PostgreSQL and
    inserts one row. Then every lease is revoked at once. Bounded by `limit_seconds`."""
    import concurrent.futures
    import threading

    import psycopg

    from smoke_check import app_login

    role = program.shape.role_tables(f"b{program.suffix}")[0][0]
    paths = json.loads(
        subprocess.run(
            ["pulumi", "stack", "output", "appRoles", "--json", "--stack", program.stack],
            cwd=program.project,
            env=program.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )[role]
    deadline = time.monotonic() + limit_seconds
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def application(share: int) -> None:
        app = app_login(client, paths)
        for _ in range(share):
            if time.monotonic() > deadline:
                raise TimeoutError(f"load: over {limit_seconds} s")
            try:
                started = time.perf_counter()
                secret = app.secrets.database.generate_credentials(role, mount_point=program.mount)
                took = (time.perf_counter() - started) * 1000
                with psycopg.connect(
                    host="127.0.0.1",
                    port=int(os.environ["PGPORT"]),
                    dbname=program.database,
                    user=secret["data"]["username"],
                    password=secret["data"]["password"],
                    connect_timeout=10,
                ) as session:
                    session.execute(
                        "INSERT INTO weekly_metrics_reporting (week_ending, product_downloads, "
                        "github_stars, twitter_followers) VALUES (now(), 1, 1, 1)"
                    )
                with lock:
                    latencies.append(took)
            except Exception as error:
                with lock:
                    errors.append(f"{type(error).__name__}: {error}")

    shares = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]
    with admin_session(program.database) as admin:
        rows_before = admin.execute("SELECT count(*) FROM weekly_metrics_reporting").fetchone()[0]
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(application, share) for share in shares]:
            future.result()
    issue_wall = time.monotonic() - started
    started = time.monotonic()
    client.sys.revoke_prefix(f"{program.mount}/creds/{role}")
    revoke_seconds = time.monotonic() - started
    with admin_session(program.database) as admin:
        rows = admin.execute("SELECT count(*) FROM weekly_metrics_reporting").fetchone()[0] - rows_before
        left = admin.execute(
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "JOIN pg_roles u ON u.oid = m.member WHERE g.rolname = %s AND u.rolcanlogin "
            "AND u.rolname LIKE 'v-%%'",
            (role.replace("-", "_"),),
        ).fetchone()[0]
    cut = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "credentials": len(latencies),
        "errors": errors,
        "rows": rows,
        "left": left,
        "p50": statistics.median(latencies) if latencies else 0.0,
        "p99": cut[98],
        "per_second": len(latencies) / issue_wall,
        "issue_wall": issue_wall,
        "revoke": revoke_seconds,
    }


def admin_session(database: str):
    import psycopg

    return psycopg.connect(
        host="127.0.0.1",
        port=int(os.environ["PGPORT"]),
        dbname=database,
        user="postgres",
        password=superuser_password(),
        autocommit=True,
    )


OPERATIONS = ("up", "preview", "destroy")


def measure(programs: dict[str, ProgramRun], runs: int, phases: bool) -> dict[str, dict]:
    """Each program (by label) measured in turns, so that drift of the machine hits
    all alike: a no-op preview cut into phases (if `phases`), then up / preview /
    destroy. Per label: the median phases ("phases") and wall times (by operation)."""
    breakdowns: dict[str, list] = {label: [] for label in programs}
    timings = {label: {op: [] for op in OPERATIONS} for label in programs}
    if phases:
        for program in programs.values():
            program.pulumi("up", "--yes", "--skip-preview")
        for _ in range(runs):
            for label, program in programs.items():
                breakdowns[label].append(phase_breakdown(program.project, program.env, program.stack))
        for program in programs.values():
            program.pulumi("destroy", "--yes", "--skip-preview")
    for _ in range(runs):
        for label, program in programs.items():
            timings[label]["up"].append(program.pulumi("up", "--yes", "--skip-preview"))
            timings[label]["preview"].append(program.pulumi("preview"))
            timings[label]["destroy"].append(program.pulumi("destroy", "--yes", "--skip-preview"))
    return {
        label: {
            "phases": median_phases(breakdowns[label]) if phases else [],
            **{op: statistics.median(values) for op, values in timings[label].items()},
        }
        for label in programs
    }


def before_after(before: dict, after: dict) -> dict[str, tuple[float, float]]:
    """(before, after) by phase, then by operation, from two `measure` results."""
    table = {name: (old, new) for (name, old), (_, new) in zip(before["phases"], after["phases"])}
    for op in OPERATIONS:
        table[f"pulumi {op} (wall)"] = (before[op], after[op])
    return table


def print_before_after(title: str, table: dict[str, tuple[float, float]]) -> None:
    print(title)
    print(f"  {'':<48} {'before':>7} {'after':>7} {'after/before':>13}")
    for name, (before, after) in table.items():
        ratio = f"{after / before:.2f}" if before >= 0.01 else "-"
        print(f"  {name:<48} {before:>6.2f}s {after:>6.2f}s {ratio:>13}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--credentials", type=int, default=50)
    parser.add_argument("--load-credentials", type=int, default=500)
    parser.add_argument("--load-clients", type=int, default=8)
    parser.add_argument("--load-limit-seconds", type=float, default=300)
    parser.add_argument("--only-load", action="store_true", help="the load run alone")
    parser.add_argument(
        "--scales",
        default="10,30,100",
        help="sizes (application roles) of the generated organisation, one stack and split",
    )
    parser.add_argument("--parallel", type=int, default=4, help="application stacks run at once when split")
    parser.add_argument("--only-scale", action="store_true", help="the generated organisation's sizes alone")
    parser.add_argument(
        "--baseline",
        metavar="REVISION",
        help="also measure the program at this git revision (same toolchain, virtualenv and "
        "servers), in turns with the current one, for a before/after table",
    )
    args = parser.parse_args()
    client = hvac.Client(
        url=os.environ["VAULT_ADDR"], token=os.environ["VAULT_TOKEN"], verify=vault_tls_verify(), timeout=120
    )

    results: dict[str, dict[str, float]] = {}
    issue_ms: dict[str, list[float]] = {}
    compared: dict[str, dict[str, tuple[float, float]]] = {}
    phases: dict[str, list[tuple[str, float]]] = {}
    scales = [int(size) for size in args.scales.split(",") if size]
    if args.only_scale:
        organisation(scales, args.parallel)
        return
    with tempfile.TemporaryDirectory(prefix="pgcreds-bench-") as temp:
        program = ProgramRun(SHAPES[0], Path(temp) / "load")
        try:
            program.pulumi("up", "--yes", "--skip-preview")
            loaded = load(program, client, args.load_credentials, args.load_clients, args.load_limit_seconds)
        finally:
            program.remove()
        print(
            f"load: {loaded['credentials']} credentials by {args.load_clients} concurrent AppRole clients, each "
            f"logging in to PostgreSQL and inserting a row: {len(loaded['errors'])} errors, {loaded['rows']} rows, "
            f"issue p50 {loaded['p50']:.1f} ms, p99 {loaded['p99']:.1f} ms, {loaded['per_second']:.0f} "
            f"credentials/s ({loaded['issue_wall']:.1f} s); revoke of all leases {loaded['revoke']:.2f} s; "
            f"{loaded['left']} dynamic roles left",
            flush=True,
        )
        for error in loaded["errors"][:5]:
            print(f"  error: {error}")
        if args.only_load:
            return
        baseline_source = checkout(args.baseline, Path(temp) / "baseline-source") if args.baseline else None
        for shape in SHAPES:
            program = ProgramRun(shape, Path(temp) / shape.name)
            baseline = (
                ProgramRun(shape, Path(temp) / f"{shape.name}-baseline", source=baseline_source)
                if baseline_source and shape.name != "wide50"
                else None
            )
            try:
                measured = measure(
                    {**({"before": baseline} if baseline else {}), "after": program},
                    args.runs if shape.name != "wide50" else 1,
                    phases=shape.name != "wide50",
                )
                results[shape.name] = {op: measured["after"][op] for op in OPERATIONS}
                phases[shape.name] = measured["after"]["phases"]
                if baseline:
                    compared[shape.name] = before_after(measured["before"], measured["after"])
                if shape.name != "gen20":
                    program.pulumi("up", "--yes", "--skip-preview")
                    role = shape.role_tables(f"b{program.suffix}")[0][0]
                    issue_ms[shape.name] = issue_times(client, program.mount, role, args.credentials * args.runs)
            finally:
                program.remove()
                if baseline:
                    baseline.remove()
            if shape.name != "wide50":
                raw = [raw_baseline(shape) for _ in range(args.runs)]
                results[shape.name]["raw up"] = statistics.median(r[0] for r in raw)
                results[shape.name]["raw destroy"] = statistics.median(r[1] for r in raw)

    if compared:
        for name, label in (("dev", "the dev shape"), ("gen20", "the 20-role generated stack (cold up)")):
            print_before_after(
                f"{label}: no-op pulumi preview by phase (engine log timestamps), then totals; "
                f"before = {args.baseline} (file backend, passphrase, static admin password), "
                "after = this revision (postgres:// backend with a Vault-issued login, Vault "
                f"transit, the deployer's login from Vault); median of {args.runs} in turns",
                compared[name],
            )
    else:
        for name in ("dev", "gen20"):
            print(f"no-op pulumi preview of the {name} shape, by phase (engine log timestamps, median of {args.runs}):")
            for phase, seconds in phases[name]:
                print(f"  {phase:<48} {seconds:>6.2f}s")
    print(
        f"{'shape':<8} {'up':>7} {'preview':>8} {'destroy':>8} {'raw up':>7} {'raw destroy':>11} "
        f"{'up/raw':>7} {'preview/up':>10}   (seconds, median of {args.runs})"
    )
    for name in ("dev", "gen20"):
        r = results[name]
        print(
            f"{name:<8} {r['up']:>7.2f} {r['preview']:>8.2f} {r['destroy']:>8.2f} {r['raw up']:>7.2f} "
            f"{r['raw destroy']:>11.2f} {r['up'] / r['raw up']:>7.1f} {r['preview'] / r['up']:>10.2f}"
        )
    print(f"gen20 up / dev up: {results['gen20']['up'] / results['dev']['up']:.2f}")
    for name, label in (("dev", "1 table"), ("wide50", "50 tables")):
        values = issue_ms[name]
        print(
            f"issue one credential, role over {label}: median {statistics.median(values):.1f} ms, "
            f"p90 {statistics.quantiles(values, n=10)[-1]:.1f} ms ({len(values)} credentials)"
        )
    if scales:
        organisation(scales, args.parallel)


def organisation(scales: list[int], parallel: int) -> None:
    """The generated organisation at each size, one stack and split; then where a
    cold `up` of the middle size spends its steps, by kind of resource."""
    with tempfile.TemporaryDirectory(prefix="pgcreds-bench-") as temp:
        scale.report(*scale.measure(scales, parallel, Path(temp)), parallel=parallel)
        middle = sorted(scales)[len(scales) // 2]
        scale.report_step_times(scale.measure_step_times(middle, Path(temp)), middle)


if __name__ == "__main__":
    main()
