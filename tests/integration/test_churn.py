"""Credential churn (issue "The team backend at file speed", item 4), in
`make test-long`: 10,000 credentials issued and revoked through the client
library leave the server's catalog as it was (as many roles in `pg_authid`, the
tables' ACLs byte for byte the same: the credentials hold their privileges
through one group role, never by grants of their own); then `pulumi destroy`
with 5,000 live leases leaves no dynamic role and no lease. Prints its figures."""

from __future__ import annotations

import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from pgcreds_client import CredentialSource
from stacks import ProgramStack, vault

pytestmark = pytest.mark.long  # make test-long
CHURN, LIVE, WORKERS = 10_000, 5_000, 8


class SecretIds:
    """What a launcher hands each process of the library: a secret-id of its own,
    a new one every 90 logins (the role allows 100). One shared by concurrent
    logins fails on OpenBao 2.7.2 (its transactional storage answers 500
    `transaction commit failed` when two logins spend one secret-id's uses at once)."""

    def __init__(self, path: str):
        self.path, self.local = path, threading.local()

    def __call__(self) -> str:
        mine = self.local
        if not getattr(mine, "current", "") or mine.uses >= 90:
            mine.current, mine.uses = vault().write_data(self.path)["data"]["secret_id"], 0
        mine.uses += 1
        return mine.current


def catalog(stack: ProgramStack) -> tuple[int, int, list[tuple[str, str]]]:
    with stack.server.connect(stack.database) as admin:
        roles = admin.execute("SELECT count(*) FROM pg_authid").fetchone()[0]
        members = admin.execute("SELECT count(*) FROM pg_auth_members").fetchone()[0]
        acls = admin.execute(
            "SELECT c.relname, c.relacl::text FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = 'public' ORDER BY 1"
        ).fetchall()
    return roles, members, acls


def dynamic_roles(stack: ProgramStack) -> int:
    with stack.server.connect() as admin:
        return admin.execute(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE %s", (f"v-{stack.role_name}%",)
        ).fetchone()[0]


def live_leases(stack: ProgramStack) -> int:
    try:
        return len(vault().sys.list_leases(prefix=f"{stack.mount}/creds/{stack.role_name}")["data"]["keys"])
    except Exception:
        return 0


def wait_for(condition, seconds: float) -> float:
    started = time.monotonic()
    while not condition() and time.monotonic() - started < seconds:
        time.sleep(1)
    return time.monotonic() - started


def test_ten_thousand_credentials_then_destroy_with_five_thousand_live(new_stack: ProgramStack):
    new_stack.set(roles=new_stack.roles_config(secretIdUses=100))
    new_stack.stack.up()
    paths = new_stack.outputs()["appRoles"][new_stack.role_name]
    role_id = vault().read(paths["roleIdPath"])["data"]["role_id"]
    secret_ids = SecretIds(paths["secretIdPath"])
    before = catalog(new_stack)

    def source() -> CredentialSource:
        return CredentialSource(
            os.environ["VAULT_ADDR"],
            role_id,
            secret_ids,
            f"{new_stack.mount}/creds/{new_stack.role_name}",
            login_path=paths["loginPath"],
            ca_cert=os.environ.get("VAULT_CACERT"),
            timeout=60,
        )

    def churn(index: int) -> float:
        started = time.monotonic()
        credentials = source()
        login = credentials.credential()
        if index % 100 == 0:  # one in a hundred logs in, as an application would
            with psycopg.connect(
                host="127.0.0.1",
                port=new_stack.server.port,
                dbname=new_stack.database,
                user=login.username,
                password=login.password,
            ) as conn:
                conn.execute("SELECT count(*) FROM weekly_metrics_reporting").fetchone()
        credentials.close()  # the token is revoked, and the lease with it
        return time.monotonic() - started

    started = time.monotonic()
    with ThreadPoolExecutor(WORKERS) as pool:
        each = list(pool.map(churn, range(CHURN)))
    issued = time.monotonic() - started
    settled = wait_for(lambda: catalog(new_stack)[0] == before[0], 300)
    after = catalog(new_stack)
    print(
        f"\nchurn: {CHURN} credentials issued and revoked by {WORKERS} threads in {issued:.0f} s "
        f"({CHURN / issued:.0f}/s; each {statistics.median(each) * 1000:.0f} ms median); catalog settled "
        f"{settled:.1f} s later; pg_authid {before[0]} -> {after[0]}, pg_auth_members {before[1]} -> {after[1]}"
    )
    assert after == before  # the same roles, memberships and ACLs, byte for byte

    started = time.monotonic()
    with ThreadPoolExecutor(WORKERS) as pool:  # credentials held, as 5,000 processes would hold them
        live = list(pool.map(lambda _: source(), range(LIVE)))
        list(pool.map(lambda s: s.credential(), live))
    issued_live = time.monotonic() - started
    assert live_leases(new_stack) == LIVE and dynamic_roles(new_stack) == LIVE
    started = time.monotonic()
    new_stack.stack.destroy()
    destroyed = time.monotonic() - started
    print(
        f"destroy with {LIVE} live leases (issued in {issued_live:.0f} s): {destroyed:.1f} s; "
        f"{dynamic_roles(new_stack)} dynamic roles and {live_leases(new_stack)} leases left"
    )
    assert dynamic_roles(new_stack) == 0 and live_leases(new_stack) == 0
