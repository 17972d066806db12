"""An unreachable PostgreSQL or Vault gives a clear error, and a later
`pulumi up` with the right address converges."""

from __future__ import annotations

import os

import pytest
from pulumi import automation as auto

from stacks import ProgramStack

CLOSED_PORT = "1"  # nothing listens on port 1 of the loopback


def test_unreachable_vault_then_converges(new_stack: ProgramStack):
    new_stack.set(vaultAddress=f"http://127.0.0.1:{CLOSED_PORT}")
    with pytest.raises(auto.CommandError) as failure:
        new_stack.stack.up()
    message = str(failure.value)
    # The vault provider's own words: the address it tried and why it failed.
    assert f'"http://127.0.0.1:{CLOSED_PORT}/v1/auth/token/lookup-self": dial tcp' in message, message
    assert "connection refused" in message, message
    # The PostgreSQL side was created before Vault was needed.
    assert new_stack.resource_count() > 0

    new_stack.set(vaultAddress=os.environ["VAULT_ADDR"])
    assert new_stack.stack.up().summary.result == "succeeded"
    report = new_stack.smoke_check()
    assert report.passed, report.table()


def test_unreachable_postgres_then_converges(new_stack: ProgramStack):
    new_stack.set(postgresPort=CLOSED_PORT)
    with pytest.raises(auto.CommandError) as failure:
        new_stack.stack.up()
    message = str(failure.value)
    assert "error connecting to PostgreSQL server 127.0.0.1" in message, message
    assert f"127.0.0.1:{CLOSED_PORT}: connect: connection refused" in message, message

    new_stack.set(postgresPort=os.environ["PGPORT"])
    assert new_stack.stack.up().summary.result == "succeeded"
    report = new_stack.smoke_check()
    assert report.passed, report.table()
