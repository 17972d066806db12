"""An unreachable PostgreSQL or Vault gives a clear error, and a later
`pulumi up` with the right address converges."""

from __future__ import annotations

import os
import re

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
    assert f"pgcreds:postgresPort: PostgreSQL at 127.0.0.1:{CLOSED_PORT} (database " in message, message
    assert "Connection refused" in message and "Nothing was changed." in message, message
    assert new_stack.resource_count() <= 1  # the stack itself at most: nothing was registered

    new_stack.set(postgresPort=os.environ["PGPORT"])
    assert new_stack.stack.up().summary.result == "succeeded"
    report = new_stack.smoke_check()
    assert report.passed, report.table()


def test_one_up_with_a_wrong_port_changes_nothing_and_reverting_converges(new_stack: ProgramStack):
    """Issue "No single mistake wedges a stack", class 1: a deployed stack, one `up`
    with a wrong port (or a CI job without PGPORT). Before, that `up` moved the
    providers and the role claims to the wrong address in the state, and after
    reverting, the claims refused the stack's own roles."""
    new_stack.stack.up()
    new_stack.set(postgresPort=CLOSED_PORT)
    for attempt in (new_stack.stack.up, lambda: new_stack.stack.up(refresh=True)):
        with pytest.raises(auto.CommandError) as failure:
            attempt()
        assert "Nothing was changed." in str(failure.value)
    # Nothing of the wrong address reached the state: no provider, trigger or connection names it.
    exported = new_stack.run("stack", "export", "--show-secrets")
    assert f"127.0.0.1:{CLOSED_PORT}/" not in exported
    assert not re.search(rf'"port":\s*"?{CLOSED_PORT}"?\s*[,}}]', exported)

    new_stack.set(postgresPort=os.environ["PGPORT"])  # reverted
    assert set(new_stack.stack.up(refresh=True).summary.resource_changes) == {"same"}
    assert new_stack.smoke_check().passed
