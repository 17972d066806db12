"""Vault failover under load (issue 31, item 3): a 3-node OpenBao raft cluster
with TLS (`local/vault-cluster.sh`, servers of this test's own, in its temporary
folder), whose leader is killed (SIGKILL) twice:

1. during a `pulumi up` that adds a role. The stack's Vault provider and its
   secrets provider (transit) talk to one node, a standby, which forwards to the
   leader: the question is whether the up converges by itself or needs another run.
2. during the rotation proof's application load (examples/metrics_app, 4 workers,
   10 s / 30 s leases), the client given every node, the leader first: it must
   move on to another node, and no query may fail.

Each prints its figures (the issue's report)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac
import psycopg
import pytest
from pulumi import automation as auto

from stacks import REPO, ProgramStack, cleanup, make_stack, start_metrics_app

# Its servers are its own: it runs once, in the shorter half of `make test`.
pytestmark = pytest.mark.vault_half

SCRIPT = REPO / "local" / "vault-cluster.sh"
LOAD_SECONDS, KILL_AT, WORKERS = 40, 12, 4


def free_port_range(count: int) -> int:
    """The first of `count` consecutive free loopback ports, below the ephemeral range."""
    for base in range(21000, 32000, 16):
        try:
            for port in range(base, base + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port range for the cluster")


@dataclass
class Cluster:
    env: dict[str, str]
    addresses: list[str]
    vault_env: dict[str, str]

    def script(self, action: str) -> str:
        done = subprocess.run([str(SCRIPT), action], env=self.env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout.strip()

    def leader(self) -> int:
        for _ in range(100):
            if found := self.script("leader"):
                return int(found)
            time.sleep(0.2)
        raise AssertionError("no active node")

    def client(self, node: int | None = None) -> hvac.Client:
        address = self.addresses[(node or self.leader()) - 1]
        return hvac.Client(url=address, token=self.vault_env["VAULT_TOKEN"], verify=self.vault_env["VAULT_CACERT"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "PGCREDS_LOCAL_DIR": str(folder), "PGCREDS_CLUSTER_PORT": str(free_port_range(6))}
    env.pop("PGCREDS_CLUSTER_DIR", None)
    started = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    exported = subprocess.run(
        ["bash", "-c", f'eval "$({SCRIPT} env)" && env'], env=env, capture_output=True, text=True, check=True
    ).stdout
    values = dict(line.split("=", 1) for line in exported.splitlines() if line.startswith(("VAULT_", "PGCREDS_VAULT")))
    made = Cluster(
        env,
        values["PGCREDS_VAULT_ADDRS"].split(","),
        {key: values[key] for key in ("VAULT_ADDR", "VAULT_TOKEN", "VAULT_CACERT")},
    )
    # The test stacks' secrets provider (hashivault://pgcreds-tests) on the cluster.
    root = made.client()
    root.sys.enable_secrets_engine("transit")
    root.secrets.transit.create_key("pgcreds-tests")
    try:
        yield made
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def cluster_stack(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProgramStack]:
    """A stack of the program whose Vault is the cluster, through one standby."""
    leader = cluster.leader()
    standby = next(node for node in (1, 2, 3) if node != leader)
    vault_env = {**cluster.vault_env, "VAULT_ADDR": cluster.addresses[standby - 1]}
    stack = make_stack(tmp_path_factory.mktemp("failover"), env=vault_env)
    stack.set(vaultAddress=vault_env["VAULT_ADDR"])
    stack.stack.up()
    try:
        yield stack
    finally:
        cluster.script("start")  # every node back, so that the destroy can run
        cleanup(stack)


def dynamic_login(cluster: Cluster, stack: ProgramStack, role: str) -> str:
    """A credential of `role`, from the cluster, logged in with: the user's name."""
    secret = cluster.client().read(f"{stack.mount}/creds/{role}")
    with psycopg.connect(
        host="127.0.0.1",
        port=stack.server.port,
        dbname=stack.database,
        user=secret["data"]["username"],
        password=secret["data"]["password"],
        sslmode="disable",
    ) as conn:
        return conn.execute("SELECT current_user").fetchone()[0]


def test_the_leader_killed_during_an_up_that_adds_a_role(cluster: Cluster, cluster_stack: ProgramStack):
    stack = cluster_stack
    new_role = f"m{stack.suffix}-reader"
    stack.set(
        roles=[
            *stack.roles_config(),
            {
                "name": new_role,
                "tables": ["weekly_metrics_reporting"],
                "access": "read",
                "defaultTtl": "1h",
                "maxTtl": "4h",
            },
        ]
    )
    killed: list[tuple[int, float, str]] = []

    def kill_at_first_create(event: auto.EngineEvent) -> None:
        pre = event.resource_pre_event
        if pre and pre.metadata.op == auto.OpType.CREATE and not killed:
            killed.append((cluster.leader(), time.monotonic(), pre.metadata.type))
            cluster.script("kill-leader")

    started = time.monotonic()
    first_error = ""
    try:
        result = stack.stack.up(on_event=kill_at_first_create)
        converged_by_itself = True
    except auto.CommandError as error:
        converged_by_itself = False
        first_error = next((line.strip() for line in str(error).splitlines() if "error" in line.lower()), str(error))
        result = stack.stack.up()  # what `make up` again does
    took = time.monotonic() - started
    assert killed, "the up created nothing, so no leader was killed during it"
    new_leader = cluster.leader()
    assert new_leader != killed[0][0]
    changes = result.summary.resource_changes or {}
    print(
        f"\nfailover during up: leader node {killed[0][0]} killed at the first create ({killed[0][2]}), "
        f"{killed[0][1] - started:.1f} s in; node {new_leader} took over; the up "
        + ("converged by itself" if converged_by_itself else f"failed ({first_error[:300]}) and a second up converged")
        + f"; {took:.1f} s in all; last up: {changes}"
    )
    # Converged: nothing left to do, and the new role's credential works.
    preview = stack.stack.preview()
    assert set((preview.change_summary or {}).keys()) <= {"same"}, preview.change_summary
    assert dynamic_login(cluster, stack, new_role).startswith("v-")
    cluster.script("start")  # the killed node back, as a standby: 3 voters again for the next test


def test_the_leader_killed_under_the_application_load(cluster: Cluster, cluster_stack: ProgramStack, tmp_path: Path):
    stack = cluster_stack
    cluster.script("start")
    stack.set(roles=stack.roles_config(defaultTtl="10s", maxTtl="30s", secretIdUses=20))
    stack.stack.up()
    operator = cluster.client()
    paths = stack.outputs()["appRoles"][stack.role_name]
    secret_file = tmp_path / "secret-id"
    secret_file.write_text(operator.write_data(paths["secretIdPath"])["data"]["secret_id"])
    secret_file.chmod(0o600)
    leader = cluster.leader()
    # The leader first: the node the client starts with is the one that dies.
    ordered = [cluster.addresses[leader - 1], *(a for n, a in enumerate(cluster.addresses, 1) if n != leader)]
    stats_file = tmp_path / "stats.json"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "client"),
        "PGCREDS_VAULT_ADDRS": ",".join(ordered),
        "VAULT_CACERT": cluster.vault_env["VAULT_CACERT"],
        "PGCREDS_ROLE_ID": operator.read(paths["roleIdPath"])["data"]["role_id"],
        "PGCREDS_SECRET_ID_FILE": str(secret_file),
        "PGCREDS_CREDS_PATH": f"{stack.mount}/creds/{stack.role_name}",
        "PGCREDS_LOGIN_PATH": paths["loginPath"],
        "PGCREDS_CONNINFO": f"host=127.0.0.1 port={stack.server.port} dbname={stack.database} sslmode=disable",
    }
    env.pop("PGCREDS_SECRET_ID", None)
    service = start_metrics_app(env, LOAD_SECONDS, WORKERS, stats_file)
    output: dict[str, str] = {}
    reader = threading.Thread(target=lambda: output.update(zip(("out", "err"), service.communicate(), strict=True)))
    reader.start()
    time.sleep(KILL_AT)
    killed = int(cluster.script("kill-leader").splitlines()[-1])
    reader.join(timeout=LOAD_SECONDS + 120)
    assert service.returncode == 0, output.get("out", "")[-2000:] + output.get("err", "")[-4000:]
    stats = json.loads(stats_file.read_text())
    new_leader = cluster.leader()
    print(
        f"\nfailover under load (leader node {killed} killed at {KILL_AT} s of {LOAD_SECONDS} s, {WORKERS} workers, "
        f"leases 10 s / 30 s; node {new_leader} took over): {stats['queries']} queries, {stats['failed']} failed, "
        f"{stats['credentials_read']} credentials issued, {stats['credential_reads_failed']} failed, "
        f"{stats['vault_failovers']} Vault requests moved to another node, longest gap between two successful "
        f"queries {stats['longest_gap_seconds']} s"
    )
    assert killed == leader and new_leader != killed
    assert stats["failed"] == 0, stats["errors"]
    # The client started on the node that died, and went on through another one.
    assert stats["vault_failovers"] >= 1, stats
    assert stats["credentials_read"] >= 2, stats  # a rotation after the kill (leases last at most 30 s)
    assert "password=" not in (output["err"] + output["out"]).lower()
