"""CredentialSource against a stand-in for Vault's API (the real one is exercised
by tests/integration/test_rotation.py): when it renews, when it rotates, what
it does after a revocation, and that no secret reaches the log."""

from __future__ import annotations

import itertools
import logging

import hvac.exceptions
import pytest

from pgcreds_client import CredentialSource

LEASE, MAX = 15, 45


class FakeVault:
    """Leases and tokens with Vault's arithmetic: a renewal is capped at the max TTL."""

    def __init__(self) -> None:
        self.clock = 0.0
        self.numbers = itertools.count(1)
        self.leases: dict[str, float] = {}  # lease id -> its max end
        self.logins: list[str] = []
        self.secret_ids: list[str] = []

    def client(self, **_kwargs) -> FakeClient:
        return FakeClient(self)


class FakeClient:
    def __init__(self, vault: FakeVault) -> None:
        self.vault, self.token, self.born = vault, None, vault.clock
        outer = self

        class Adapter:
            def post(self, path, json):
                vault.logins.append(path)
                vault.secret_ids.append(json["secret_id"])
                outer.born = vault.clock
                return {"auth": {"client_token": f"token-{next(vault.numbers)}"}}

        class Token:
            def renew_self(self, increment):
                return {"auth": {"lease_duration": max(0, min(increment, outer.born + MAX - vault.clock))}}

            def revoke_self(self):
                pass

        class Sys:
            def renew_lease(self, lease_id, increment):
                if lease_id not in vault.leases:
                    raise hvac.exceptions.InvalidRequest("lease not found")
                return {"lease_duration": max(0, min(increment, vault.leases[lease_id] - vault.clock))}

            def read_lease(self, lease_id):
                if lease_id not in vault.leases:
                    raise hvac.exceptions.InvalidRequest("invalid lease")
                return {}

            def revoke_lease(self, lease_id):
                vault.leases.pop(lease_id, None)

        self.adapter, self.sys = Adapter(), Sys()
        self.auth = type("Auth", (), {"token": Token()})()

    def read(self, path):
        number = next(self.vault.numbers)
        lease_id = f"{path}/{number}"
        self.vault.leases[lease_id] = self.vault.clock + MAX
        return {
            "lease_id": lease_id,
            "lease_duration": LEASE,
            "data": {"username": f"v-app-{number}", "password": f"secret-password-{number}"},
        }


@pytest.fixture
def vault(monkeypatch) -> FakeVault:
    fake = FakeVault()
    # The source measures with time.monotonic(); the stand-in's clock drives it.
    monkeypatch.setattr("pgcreds_client.credentials.time.monotonic", lambda: fake.clock)
    return fake


def source(vault: FakeVault, **kwargs) -> CredentialSource:
    return CredentialSource(
        "https://vault",
        "role-id",
        kwargs.pop("secret_id", "secret-id-1"),
        "database/creds/app",
        login_path="auth/approle/login",
        client_factory=vault.client,
        **kwargs,
    )


def test_renews_every_third_of_the_lease_and_rotates_when_the_max_is_within_one_lease(vault: FakeVault):
    rotated = []
    credentials = source(vault, on_rotate=rotated.append)
    first = credentials.credential()
    waits = []
    for now in (5, 10, 15, 20, 25, 30):
        vault.clock = now
        waits.append(credentials.tick())
    assert credentials.credential() is first and waits == [5.0] * 6 and credentials.credentials_read == 1
    vault.clock = 35  # asks for 15 s more, is granted 10: the max is near
    credentials.tick()
    vault.clock = 36
    credentials.tick()
    second = credentials.credential()
    assert second.username != first.username and credentials.credentials_read == 2 and len(vault.logins) == 2
    assert credentials.live_leases == 2  # the old one keeps its last 10 s, for connections still out
    vault.clock = 46
    credentials.tick()
    assert credentials.live_leases == 1


def test_a_revoked_credential_is_replaced_at_the_next_check(vault: FakeVault):
    credentials = source(vault)
    first = credentials.credential()
    vault.clock = 5
    assert credentials.replace_if_revoked() is False
    vault.leases.pop(first.lease_id)  # break-glass
    assert credentials.replace_if_revoked() is True
    assert credentials.credential().username != first.username


def test_a_refused_login_replaces_the_credential_once_for_threads_that_failed_together(vault: FakeVault):
    """PostgreSQL refuses the dropped user before Vault has finished revoking its lease."""
    credentials = source(vault)
    first = credentials.credential()
    vault.clock = 5
    assert credentials.replace_if_revoked(refused=True) is True
    second = credentials.credential()
    assert second.username != first.username
    vault.clock = 5.5  # the other workers, failing a moment later, keep the fresh one
    assert credentials.replace_if_revoked(refused=True) is True
    assert credentials.credential() is second and credentials.credentials_read == 2


def test_a_failed_renewal_rotates_too(vault: FakeVault):
    credentials = source(vault)
    first = credentials.credential()
    vault.leases.clear()
    vault.clock = 5
    credentials.tick()
    assert credentials.credential().username != first.username


def test_each_login_can_take_a_fresh_secret_id(vault: FakeVault):
    fresh = iter(["secret-id-a", "secret-id-b"])
    credentials = source(vault, secret_id=lambda: next(fresh))
    credentials.credential()
    vault.clock = 5
    vault.leases.clear()
    credentials.replace_if_revoked()
    assert vault.secret_ids == ["secret-id-a", "secret-id-b"]


def test_no_secret_reaches_the_log(vault: FakeVault, caplog):
    caplog.set_level(logging.DEBUG)
    credentials = source(vault)
    first = credentials.credential()
    vault.clock = 5
    vault.leases.clear()
    credentials.replace_if_revoked()
    text = caplog.text + repr(first) + repr(credentials.credential())
    assert "v-app-" in text  # the user names are logged …
    assert "secret-password" not in text and "secret-id" not in text and "token-" not in text  # … nothing secret
