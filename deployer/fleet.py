"""Many application stacks in one command, a few at a time:

    python -m deployer.fleet up billing reporting search ... [--parallel 4]
    python -m deployer.fleet preview --all [--parallel 8]

Each stack runs as its own `pulumi` process (a CLI, a language host and its
plugins: they share nothing), as its own deploy login: on the team backend, the
deploy session of its application (`deployer.session --application`, read-only
for a preview); elsewhere, the login its `pgcreds:postgresAdminUser` names, with
the caller's PGPASSFILE. A line per stack as it ends, then one table (stack,
result, changes, seconds) and, for each failure, its reasons in the program's
words. A failed stack does not stop the others; the exit code is 1 if any failed.
`--all` takes every stack file of the project whose pgcreds:stackKind is
`application`. The caller's Vault token must be able to open each application's
session (an operator's, or a token whose policies cover every one of them).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from clients.pulumi_output import summary
from deployer.session import session_exports

REPO = Path(__file__).resolve().parents[1]
# The Go collector's target for the fleet's pulumi processes (Go's default is 100).
FLEET_GOGC = "400"
# A line of the `Resources:` block: `+ 3 created`, `~ 1 to update`, `12 unchanged`.
RESOURCE_LINE = re.compile(
    r"^\s+(?:[+~\-]+\s*)?(\d+) (?:to )?(create|created|update|updated|delete|deleted|"
    r"replace|replaced|unchanged)\b"
)

# What `up` says it did and `preview` says it would do, as one kind.
KINDS = {
    "create": "create",
    "created": "create",
    "update": "update",
    "updated": "update",
    "delete": "delete",
    "deleted": "delete",
    "replace": "replace",
    "replaced": "replace",
    "unchanged": "unchanged",
}


@dataclass
class Outcome:
    stack: str
    result: str = "not run"
    changes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    reasons: list[str] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return sum(count for kind, count in self.changes.items() if kind != "unchanged")


def stack_config(project_dir: Path, stack: str) -> dict:
    stack_file = project_dir / f"Pulumi.{stack}.yaml"
    return (yaml.safe_load(stack_file.read_text()) or {}).get("config") or {} if stack_file.is_file() else {}


def application_stacks(project_dir: Path) -> list[str]:
    found = []
    for stack_file in sorted(project_dir.glob("Pulumi.*.yaml")):
        stack = stack_file.name.removeprefix("Pulumi.").removesuffix(".yaml")
        if stack_config(project_dir, stack).get("pgcreds:stackKind") == "application":
            found.append(stack)
    return found


def session_environment(application: str, read_only: bool, environment: Mapping[str, str]) -> dict[str, str]:
    """The exports of the application's deploy session, as a shell's `eval` would set them."""
    opened = subprocess.run(
        [
            sys.executable,
            "-m",
            "deployer.session",
            "--application",
            application,
            *(["--read-only"] if read_only else []),
        ],
        cwd=REPO,
        env=dict(environment),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if opened.returncode != 0:
        raise RuntimeError(opened.stderr.strip().splitlines()[-1] if opened.stderr.strip() else "no session")
    return session_exports(opened.stdout)


def stack_environment(
    project_dir: Path, stack: str, read_only: bool, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    config = stack_config(project_dir, stack)
    environment = dict(os.environ if base is None else base)
    # Many stacks at once are bound by CPU, and the CLI and the provider plugins are Go:
    # a lazier collector cuts a no-op preview's CPU by about 8 % (measured: docs/costs.md)
    # for some 150 MB of peak memory a process. An explicit GOGC is kept.
    environment.setdefault("GOGC", FLEET_GOGC)
    if environment.get("PULUMI_BACKEND_URL", "").startswith("postgres://"):
        application = str(config.get("pgcreds:application") or "")
        environment.update(session_environment(application, read_only, environment))
    elif config.get("pgcreds:postgresAdminUser"):
        environment.update(
            PGUSER=str(config["pgcreds:postgresAdminUser"]), PGCREDS_SESSION_KIND="preview" if read_only else "deploy"
        )
    return environment


def run_stack(
    project_dir: Path, stack: str, action: str, base: Mapping[str, str] | None = None, ci: bool = False
) -> Outcome:
    outcome, started = Outcome(stack), time.monotonic()
    try:
        environment = stack_environment(project_dir, stack, read_only=action == "preview", base=base)
        arguments = ["up", "--yes", "--skip-preview"] if action == "up" else ["preview"]
        where = ["--stack", stack, "--non-interactive", "--color", "never", "--cwd", str(project_dir)]
        done: subprocess.CompletedProcess | None = None
        if ci:
            # As ci/deploy.sh and ci/preview.sh run one stack: refreshed, the policy pack
            # enforced, and on its first deploy the stack made with its own transit key
            # (a stack that cannot be made or selected is not run: its failure is the outcome).
            arguments += ["--refresh", "--policy-pack", str(REPO / "policy")]
            if action == "up":
                made = subprocess.run(
                    [
                        "pulumi",
                        "stack",
                        "select",
                        "--create",
                        "--secrets-provider",
                        f"hashivault://pgcreds-{stack}",
                        *where,
                    ],
                    env=environment,
                    capture_output=True,
                    text=True,
                )
                done = made if made.returncode else None
        if done is None:
            done = subprocess.run(["pulumi", *arguments, *where], env=environment, capture_output=True, text=True)
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        outcome.result, outcome.reasons = "failed", [f"  (deploy session) {error}"]
        outcome.seconds = time.monotonic() - started
        return outcome
    outcome.seconds = time.monotonic() - started
    output = done.stdout + done.stderr
    in_resources = False
    for line in output.splitlines():
        in_resources = in_resources or line.startswith("Resources:")
        match = RESOURCE_LINE.match(line) if in_resources else None
        if match:
            kind = KINDS[match.group(2)]
            outcome.changes[kind] = outcome.changes.get(kind, 0) + int(match.group(1))
    outcome.result = "succeeded" if done.returncode == 0 else "failed"
    if done.returncode:
        outcome.reasons = summary(output) or [f"  {line}" for line in output.strip().splitlines()[-5:]]
    return outcome


def changes_text(outcome: Outcome) -> str:
    signs = {"create": "+", "update": "~", "delete": "-", "replace": "+-"}
    parts = [f"{signs[kind]}{count}" for kind, count in outcome.changes.items() if kind in signs and count]
    return f"{outcome.changed} ({' '.join(parts)})" if parts else str(outcome.changed)


def run_fleet(
    project_dir: Path,
    stacks: list[str],
    action: str,
    parallel: int,
    base: Mapping[str, str] | None = None,
    progress: bool = True,
    ci: bool = False,
) -> list[Outcome]:
    """Runs `action` on every stack, `parallel` at a time, in the environment `base`
    (default: this process's); a line per stack as it ends unless `progress` is off."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    with ThreadPoolExecutor(max(1, parallel)) as pool:
        running = {pool.submit(run_stack, project_dir, stack, action, base, ci): stack for stack in stacks}
        for future in as_completed(running):
            outcome = future.result()
            with lock:
                outcomes.append(outcome)
                if not progress:
                    continue
                print(
                    f"fleet: [{len(outcomes)}/{len(stacks)}] {outcome.stack}: {action} {outcome.result}, "
                    f"{changes_text(outcome)} changes, {outcome.seconds:.1f} s",
                    flush=True,
                )
    order = {stack: index for index, stack in enumerate(stacks)}
    return sorted(outcomes, key=lambda o: order[o.stack])


def print_table(outcomes: list[Outcome], action: str, wall: float, parallel: int) -> None:
    width = max([len("stack"), *(len(o.stack) for o in outcomes)])
    print(f"\n{'stack':<{width}}  {'result':<9}  {'changes':<16}  {'seconds':>7}")
    for outcome in outcomes:
        print(f"{outcome.stack:<{width}}  {outcome.result:<9}  {changes_text(outcome):<16}  {outcome.seconds:>7.1f}")
    failed = [o for o in outcomes if o.result != "succeeded"]
    print(f"{len(outcomes)} stacks, {len(failed)} failed: {action} in {wall:.1f} s, {parallel} at a time")
    for outcome in failed:
        print(f"\n{outcome.stack} failed. Why, in the program's words:")
        print("\n".join(outcome.reasons))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Bring many application stacks up, or preview them, a few at a time.")
    parser.add_argument("action", choices=("up", "preview"))
    parser.add_argument("stacks", nargs="*", help="stack names (or --all)")
    parser.add_argument("--all", action="store_true", help="every application stack file of the project")
    parser.add_argument("--parallel", type=int, default=4, help="stacks run at once (default 4)")
    parser.add_argument("--cwd", type=Path, default=REPO, help="the project's folder")
    parser.add_argument(
        "--ci",
        action="store_true",
        help="as the workflows run a stack: --refresh and the policy pack, and `up` makes a new stack "
        "with its transit key (ci/fleet.sh)",
    )
    args = parser.parse_args(argv)
    stacks = list(dict.fromkeys([*args.stacks, *(application_stacks(args.cwd) if args.all else [])]))
    if not stacks:
        parser.error("name the stacks, or --all")
    started = time.monotonic()
    outcomes = run_fleet(args.cwd, stacks, args.action, args.parallel, ci=args.ci)
    print_table(outcomes, args.action, time.monotonic() - started, args.parallel)
    return 1 if any(o.result != "succeeded" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
