"""The generated organisation at several sizes, as one stack and split (issue 20).

N application roles, each read-write on 2 tables of its own (the `gen` shape),
on the local servers, file backend, each run on its own copy of the program,
database, mount and names. Two layouts:

  one     the default: one stack holds the whole graph.
  split   a platform stack (`pgcreds:stackKind platform`) and one stack per
          application (`application`), each with one role; up to `parallel`
          application stacks run at once, as an organisation's pipelines would.

For each: the cold `up` of everything, the no-op `preview` of the stack that a
one-role change touches, the `up` of that change (a read role added beside the
first application's, removed, added again: the median of the three; the preview
too is a median of three), and `destroy`. Prints figures, asserts nothing.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac

from clients.tls import vault_tls_verify
from commands import engine_log, psql, timed
from deployer import DEPLOYER_LOGIN as DEPLOYER
from deployer.fleet import run_fleet
from program_copy import add_tables, copy_program
from sourced_env import TEST_SECRETS_PROVIDER, file_backend

TABLES_PER_ROLE = 2
OPERATIONS = ("cold up", "no-op preview", "one-role up", "destroy")


def role(application: str, suffix: str = "rw", access: str = "readwrite", tables: int = TABLES_PER_ROLE) -> dict:
    return {
        "name": f"{application}-{suffix}",
        "tables": [f"{application}_t{k}" for k in range(tables)],
        "access": access,
        "defaultTtl": "1h",
        "maxTtl": "24h",
    }


@dataclass
class Organisation:
    """One generated organisation of `roles` applications, in one layout."""

    roles: int
    split: bool
    folder: Path
    parallel: int
    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    figures: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.applications = [f"g{self.suffix}x{index:03d}" for index in range(self.roles)]
        self.database, self.mount = f"bench_scale_{self.suffix}", f"bench-scale-{self.suffix}"
        self.folder.mkdir(parents=True)
        self.project = copy_program(self.folder / "project")
        add_tables(self.project, [f"{app}_t{k}" for app in self.applications for k in range(TABLES_PER_ROLE)])
        self.state = self.folder / "state"
        self.env = {**os.environ, **file_backend(self.state)}
        # Plain JSON state, as a file backend writes by default (the deploy session's zstd
        # is for its team backend), so that the state's size by kind can be read here.
        self.env.pop("PULUMI_DIY_BACKEND_ZSTD", None)
        psql(f'CREATE DATABASE "{self.database}" OWNER {DEPLOYER}')
        common = {
            "environment": "dev",
            "postgresPort": os.environ["PGPORT"],
            "postgresDatabase": self.database,
            "postgresAdminUser": DEPLOYER,
            "postgresSslMode": "disable",
            "vaultAddress": os.environ["VAULT_ADDR"],
            "vaultMountPath": self.mount,
            "keepTablesOnDestroy": "false",
        }
        self.config: dict[str, dict[str, Any]] = {}
        if self.split:
            self.platform = f"p{self.suffix}"
            self.config[self.platform] = {**common, "stackKind": "platform", "roles": []}
            for app in self.applications:
                self.config[app] = {
                    **common,
                    "stackKind": "application",
                    "platformStack": self.platform,
                    "application": app,
                    "tableOwnerRole": f"{app}_owner",
                    "vaultAdminRole": f"{app}_vault_admin",
                    "roles": [role(app)],
                }
        else:
            self.config[f"one{self.suffix}"] = {
                **common,
                "tableOwnerRole": f"g{self.suffix}_owner",
                "vaultAdminRole": f"g{self.suffix}_vault_admin",
                "roles": [role(app) for app in self.applications],
            }
        self.headers = {}
        self.each(
            list(self.config),
            lambda stack: self.pulumi("stack", "init", "--secrets-provider", TEST_SECRETS_PROVIDER, stack=stack),
        )
        for stack in self.config:
            # The stack file as `stack init` wrote it (its secrets provider and data key), then its settings.
            self.headers[stack] = (self.project / f"Pulumi.{stack}.yaml").read_text()
            self.write_config(stack)

    @property
    def changed_stack(self) -> str:
        """The stack a one-role change touches: the first application's, or the one stack."""
        return self.applications[0] if self.split else next(iter(self.config))

    def write_config(self, stack: str) -> None:
        # JSON is YAML: `pulumi config set` for each key of each stack would cost minutes.
        lines = "".join(f"  pgcreds:{key}: {json.dumps(value)}\n" for key, value in self.config[stack].items())
        (self.project / f"Pulumi.{stack}.yaml").write_text(self.headers[stack] + "config:\n" + lines)

    def pulumi(self, *args: str, stack: str) -> float:
        return timed(["pulumi", *args, "--stack", stack, "--non-interactive"], self.project, self.env)

    def each(self, stacks: list[str], action: Callable[[str], float]) -> float:
        """Runs `action` on every stack, up to `parallel` at once; the wall time."""
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            list(pool.map(action, stacks))
        return time.perf_counter() - started

    def fleet(self, action: str, stacks: list[str]) -> float:
        """`deployer.fleet` on `stacks`, `parallel` at a time; the wall time. A failure stops the bench."""
        started = time.perf_counter()
        outcomes = run_fleet(self.project, stacks, action, self.parallel, base=self.env, progress=False)
        failed = [o for o in outcomes if o.result != "succeeded"]
        if failed:
            raise RuntimeError(f"fleet {action}: {failed[0].stack} failed:\n" + "\n".join(failed[0].reasons))
        return time.perf_counter() - started

    def run(self) -> dict[str, float]:
        up = lambda stack: self.pulumi("up", "--yes", "--skip-preview", stack=stack)  # noqa: E731
        applications = [s for s in self.config if s != getattr(self, "platform", None)]
        if self.split:
            # The platform once, then every application stack through the fleet command,
            # as an organisation's deploy would run them.
            cold = self.pulumi("up", "--yes", "--skip-preview", stack=self.platform)
            self.figures["applications up"] = self.fleet("up", applications)
            self.figures["cold up"] = cold + self.figures["applications up"]
            self.figures["preview all"] = self.fleet("preview", applications)
        else:
            self.figures["cold up"] = self.each(applications, up)
        self.figures["state bytes"] = sum(p.stat().st_size for p in self.state_files())
        self.figures["resources"] = sum(len(self.resources(p)) for p in self.state_files())
        target = self.changed_stack
        # Medians of three: one sample of a few seconds is at the mercy of a shared machine.
        self.figures["no-op preview"] = statistics.median(
            self.pulumi("preview", "--expect-no-changes", stack=target) for _ in range(3)
        )
        if not self.split:
            self.figures["preview all"] = self.figures["no-op preview"]
        roles = self.config[target]["roles"]
        changed = roles + [role(self.applications[0], "ro", "read", tables=1)]
        one_role_ups = []
        for settings in (changed, roles, changed):  # a read role added, removed, added again
            self.config[target]["roles"] = settings
            self.write_config(target)
            one_role_ups.append(up(target))
        self.figures["one-role up"] = statistics.median(one_role_ups)
        return self.figures

    def destroy(self) -> None:
        down = lambda stack: self.pulumi("destroy", "--yes", "--skip-preview", stack=stack)  # noqa: E731
        applications = [s for s in self.config if s != getattr(self, "platform", None)]
        self.figures["destroy"] = self.each(applications, down) + (down(self.platform) if self.split else 0.0)

    def state_files(self) -> list[Path]:
        return sorted((self.state / ".pulumi" / "stacks").rglob("*.json"))  # the latest state, no backups

    @staticmethod
    def resources(path: Path) -> list[dict]:
        return json.loads(path.read_text()).get("checkpoint", {}).get("latest", {}).get("resources", [])

    def kinds(self) -> dict[str, tuple[int, int]]:
        """Resources by type in the state: (count, bytes)."""
        found: dict[str, tuple[int, int]] = {}
        for path in self.state_files():
            for resource in self.resources(path):
                count, size = found.get(resource["type"], (0, 0))
                found[resource["type"]] = (count + 1, size + len(json.dumps(resource)))
        return found

    def remove(self) -> None:
        """Best effort, also after a failure: stacks, Vault objects, the database."""
        for stack in self.config:
            subprocess.run(
                ["pulumi", "destroy", "--yes", "--skip-preview", "--stack", stack],
                cwd=self.project,
                env=self.env,
                capture_output=True,
            )
        client = hvac.Client(url=os.environ["VAULT_ADDR"], token=os.environ["VAULT_TOKEN"], verify=vault_tls_verify())
        if f"{self.mount}/" in client.sys.list_mounted_secrets_engines()["data"]:
            client.sys.disable_secrets_engine(self.mount)
        if f"{self.mount}-approle/" in client.sys.list_auth_methods()["data"]:
            client.sys.disable_auth_method(f"{self.mount}-approle")
        psql(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        shutil.rmtree(self.folder, ignore_errors=True)


STEP = re.compile(
    r"^StepExecutor worker\(-?\d+\): (applying step|step) (\w+) on (urn:\S+)(?: \(preview \w+\)| retired)$"
)


def step_times(stderr: str) -> dict[str, list[float]]:
    """Seconds from 'applying step' to 'retired' per step of the engine's log
    (`-v=4`): the provider's call and the state writes around it, by resource type."""
    started: dict[tuple[str, str], float] = {}
    by_type: dict[str, list[float]] = {}
    for at, message in engine_log(stderr):
        found = STEP.match(message)
        if not found:
            continue
        kind, op, urn = found.groups()
        if kind == "applying step":
            started[(op, urn)] = at
        elif (op, urn) in started:
            resource_type = urn.split("::")[-2].split("$")[-1]
            by_type.setdefault(resource_type, []).append(at - started.pop((op, urn)))
    return by_type


def measure_step_times(roles: int, folder: Path) -> dict[str, list[float]]:
    """One more cold `up` of the one-stack organisation, with the engine's step log."""
    organisation = Organisation(roles, False, folder / f"steps{roles}", parallel=1)
    try:
        stack = organisation.changed_stack
        done = subprocess.run(
            ["pulumi", "up", "--yes", "--skip-preview", "--stack", stack, "--non-interactive", "--logtostderr", "-v=4"],
            cwd=organisation.project,
            env=organisation.env,
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise RuntimeError(f"pulumi up failed:\n{done.stdout[-3000:]}")
        return step_times(done.stderr)
    finally:
        organisation.remove()


def measure(scales: Iterable[int], parallel: int, folder: Path) -> tuple[dict, dict]:
    """{(layout, roles): figures}, and the largest one-stack organisation's state by kind."""
    results: dict[tuple[str, int], dict[str, float]] = {}
    kinds: dict[str, dict[str, tuple[int, int]]] = {}
    for roles in scales:
        for split in (False, True):
            layout = "split" if split else "one"
            organisation = Organisation(roles, split, folder / f"{layout}{roles}", parallel)
            try:
                results[(layout, roles)] = organisation.run()
                kinds[layout] = organisation.kinds()
                organisation.destroy()
            finally:
                organisation.remove()
            print(
                f"  {layout} stack{'s' if split else ''}, {roles} roles: "
                + ", ".join(f"{k} {v:.1f}" for k, v in results[(layout, roles)].items()),
                flush=True,
            )
    return results, kinds


def report(results: dict, kinds: dict, parallel: int) -> None:
    scales = sorted({roles for _, roles in results})
    print(
        f"\nthe generated organisation (N roles, each read-write on {TABLES_PER_ROLE} tables of its own; file "
        f"backend; split = a platform stack + one stack per application, up to {parallel} at once); seconds"
    )
    print(
        f"{'layout':<6} {'roles':>5} {'resources':>9} {'state':>9} {'state/role':>10} {'cold up':>8} "
        f"{'up/role':>8} {'no-op preview':>13} {'one-role up':>11} {'destroy':>8}"
    )
    for (layout, roles), r in sorted(results.items()):
        print(
            f"{layout:<6} {roles:>5} {r['resources']:>9.0f} {r['state bytes'] / 1024:>7.0f}KB "
            f"{r['state bytes'] / roles / 1024:>8.1f}KB {r['cold up']:>8.1f} {r['cold up'] / roles:>8.2f} "
            f"{r['no-op preview']:>13.1f} {r['one-role up']:>11.1f} {r['destroy']:>8.1f}"
        )
    print(
        f"\nmany application stacks: the split's applications through `deployer.fleet`, {parallel} at a time, "
        "beside the same roles in one stack; the fixed cost per application stack is the fleet's no-op preview "
        "divided by N (a stack with nothing to change pays for its CLI, language host, plugins and program "
        "alone); seconds"
    )
    print(
        f"{'apps':>5} {'one stack up':>12} {'fleet up':>9} {'up/stack':>8} "
        f"{'one stack preview':>17} {'fleet preview':>13} {'fixed cost/stack':>16}"
    )
    for roles in scales:
        one, split = results.get(("one", roles)), results.get(("split", roles))
        if not (one and split):
            continue
        print(
            f"{roles:>5} {one['cold up']:>12.1f} {split['applications up']:>9.1f} "
            f"{split['applications up'] / roles:>8.2f} {one['preview all']:>17.1f} "
            f"{split['preview all']:>13.1f} {split['preview all'] / roles:>16.2f}"
        )
    low, high = scales[0], scales[-1]
    print(f"\nratios, {high} roles against {low}:")
    for layout in ("one", "split"):
        a, b = results.get((layout, low)), results.get((layout, high))
        if not (a and b):
            continue
        print(
            f"  {layout:<5}: one-role change (up) {b['one-role up'] / a['one-role up']:.2f}x"
            f"{' (target <= 1.3x)' if layout == 'split' else ''}; no-op preview "
            f"{b['no-op preview'] / a['no-op preview']:.2f}x; cold up per role "
            f"{(b['cold up'] / high) / (a['cold up'] / low):.2f}x (target <= 1.2x); state per role "
            f"{b['state bytes'] / high / 1024:.1f} KB against {a['state bytes'] / low / 1024:.1f} KB"
        )
    for layout, by_kind in kinds.items():
        total = sum(size for _, size in by_kind.values())
        print(f"\nstate by kind of resource ({layout} layout, {high} roles; {total / 1024:.0f} KB):")
        for kind, (count, size) in sorted(by_kind.items(), key=lambda item: -item[1][1]):
            print(
                f"  {kind:<52} {count:>5} x {size / count / 1024:>5.1f} KB = {size / 1024:>7.0f} KB "
                f"({100 * size / total:>4.1f} %)"
            )


def report_step_times(by_type: dict[str, list[float]], roles: int) -> None:
    total = sum(sum(times) for times in by_type.values())
    print(
        f"\nstep time by kind of resource (one stack, {roles} roles, cold up; from 'applying step' to 'retired' "
        f"in the engine's log: the provider's call and the state writes; steps overlap, {total:.0f} s in all):"
    )
    for kind, times in sorted(by_type.items(), key=lambda item: -sum(item[1])):
        print(
            f"  {kind:<52} {len(times):>5} x {sum(times) / len(times):>6.3f} s = {sum(times):>7.1f} s "
            f"({100 * sum(times) / total:>4.1f} %)"
        )
