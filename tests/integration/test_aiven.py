"""The Aiven stack end to end, with the real engine, against a local stand-in
of the Aiven REST API whose services are real databases on the local
PostgreSQL server (TLS with a test CA: Pulumi's connections use verify-full)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Iterator

import pytest

from aiven_standin.server import AivenStandIn
from stacks import ProgramStack, admin_connect, cleanup, make_stack, vault

PROJECT = "pgcreds-test"


@pytest.fixture
def stand_in() -> Iterator[AivenStandIn]:
    server = AivenStandIn(PROJECT, token=secrets.token_urlsafe(16), pg_host="127.0.0.1",
                          pg_port=int(os.environ["PGPORT"]), ca_pem=Path(os.environ["PGCREDS_TEST_CA"]).read_text(),
                          superuser=admin_connect).start()
    yield server
    for service in list(server.services.values()):
        service.termination_protection = False
        server.delete(service)
    server.stop()


@pytest.fixture
def aiven_stack(tmp_path: Path, stand_in: AivenStandIn) -> Iterator[ProgramStack]:
    test_stack = make_stack(tmp_path, env={"AIVEN_TOKEN": stand_in.token, "PGCREDS_AIVEN_POLL_SECONDS": "0.2",
                                           # the admin password comes from the service, not from here
                                           "PGCREDS_POSTGRES_ADMIN_PASSWORD": ""})
    test_stack.set(postgresMode="aiven", postgresSslMode="verify-full", aivenApiUrl=stand_in.url,
                   aivenProject=PROJECT, aivenCloud="google-europe-west1", aivenPlan="startup-4",
                   aivenServiceName=f"pg-{test_stack.suffix}", aivenPgVersion="16")
    yield test_stack
    cleanup(test_stack)


def test_aiven_stack_up_smoke_noop_destroy(aiven_stack: ProgramStack, stand_in: AivenStandIn):
    stack = aiven_stack.stack
    assert stack.up().summary.result == "succeeded"
    (service,) = stand_in.services.values()
    assert service.name == f"pg-{aiven_stack.suffix}" and service.plan == "startup-4"
    assert service.termination_protection is False  # the test stack's environment is dev
    assert ("GET", f"/v1/project/{PROJECT}/kms/ca") in stand_in.requests

    outputs = aiven_stack.outputs()
    assert outputs["postgres"]["sslmode"] == "verify-full" and "BEGIN CERTIFICATE" in outputs["postgres"]["sslrootcert_pem"]
    report = aiven_stack.smoke_check(admin_password=service.admin_password)
    assert report.passed, report.table()

    # Vault logs in as the program's vault_admin over TLS, never as the service's admin.
    connection = vault().secrets.database.read_connection("postgresql", mount_point=aiven_stack.mount)["data"]
    assert [connection["connection_details"]["username"]] == aiven_stack.vault_logins()
    assert "sslmode=require" in connection["connection_details"]["connection_url"]
    state = aiven_stack.raw_state()
    assert service.admin_password not in state and stand_in.token not in state

    assert set(stack.up().summary.resource_changes) == {"same"}

    leases = [vault().secrets.database.generate_credentials(aiven_stack.role_name, mount_point=aiven_stack.mount)
              for _ in range(3)]
    stack.destroy()
    assert stand_in.services == {}
    users = [lease["data"]["username"] for lease in leases] + aiven_stack.program_roles + [service.admin_user]
    with admin_connect() as admin:
        assert admin.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (users,)).fetchall() == []
        assert admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (service.database,)).fetchall() == []
    assert f"{aiven_stack.mount}/" not in vault().sys.list_mounted_secrets_engines()["data"]


def test_switching_to_aiven_shows_the_replacement(new_stack: ProgramStack, stand_in: AivenStandIn):
    new_stack.set(sampleData="false")
    new_stack.stack.up()
    new_stack.stack.workspace.env_vars["AIVEN_TOKEN"] = stand_in.token
    new_stack.set(postgresMode="aiven", postgresSslMode="verify-full", aivenApiUrl=stand_in.url,
                  aivenProject=PROJECT, aivenCloud="google-europe-west1", aivenPlan="startup-4",
                  aivenServiceName=f"pg-{new_stack.suffix}")
    events: list = []
    summary = new_stack.stack.preview(on_event=events.append).change_summary
    steps: dict[str, tuple[str, set]] = {}
    for event in events:
        if event.resource_pre_event:
            step = event.resource_pre_event.metadata
            steps.setdefault(step.urn.split("::")[-1], (step.type, set()))[1].add(str(step.op.value))
    # Every PostgreSQL object moves to the new server: replaced, not silently updated.
    postgres_steps = {name: ops for name, (kind, ops) in steps.items()
                      if kind.startswith("postgresql:") or "/postgresql:" in kind}
    # 3 roles and their 3 claims, 2 table grants (table, sequence), 1 membership, 2 tables
    assert len(postgres_steps) == 11 and all("replace" in ops for ops in postgres_steps.values()), steps
    assert steps["aiven-postgres-service"][1] == {"create"} and steps["postgres"][1] == {"delete"}
    assert steps["vault-database-secrets-connection"][1] == {"update"}  # its connection_url changes
    # The login is new on the new server: its first password is sent again, and rotated again.
    assert "replace" in steps["vault-database-secrets-rotate-root"][1]
    assert summary["replace"] == 12
    assert stand_in.services == {}  # a preview creates nothing
