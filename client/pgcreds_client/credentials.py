"""One Vault credential at a time for a process, kept alive and replaced in time.

The traps this avoids:
- a lease dies with the token that read it: each credential is read with a
  token of its own (an AppRole login), and both are renewed together;
- one credential per request floods PostgreSQL with roles: one per process,
  shared by every connection of its pool;
- a lease cannot outlive its max TTL: before that, a new login reads a new
  credential, and the caller is told to move its connections (`on_rotate`);
- a credential revoked by break-glass: the renewal (or the caller, after a
  failed connect) notices, and a new one is read at once.

Never logs or prints a password, a token or a secret-id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import hvac
import hvac.exceptions
import requests

from pgcreds_client.failover import FailoverAdapter, VaultAddresses

log = logging.getLogger("pgcreds_client")

SecretIdSource = str | Callable[[], str]
# A credential read this recently is not replaced again because of a failure.
FRESH_SECONDS = 2.0
# After Vault refused the AppRole login, it is not tried again for this long.
LOGIN_RETRY_SECONDS = 30.0


class LoginRefused(RuntimeError):
    """Vault refused the AppRole login: the secret-id is used up, expired or wrong.
    Says what the service needs; raised again (without another login) for a while."""


@dataclass
class Credential:
    username: str
    password: str = field(repr=False)
    lease_id: str
    lease_seconds: int
    """The lease's duration (the role's defaultTtl); each renewal asks for as much again."""
    expires_at: float
    """time.monotonic() when the lease ends unless renewed."""
    near_end: bool = False
    """A renewal was granted less than it asked: the role's maxTtl is within one lease."""


class CredentialSource:
    """Reads `<mount>/creds/<role>` after an AppRole login, renews the lease and
    the token in a background thread (every third of the lease), and reads a
    new credential (with a new login) once a renewal is granted less than it
    asked (the role's maxTtl is less than one lease away: the old credential
    still has that long, for the pool to move its connections), or when it was
    revoked. `secret_id` is a secret-id that allows more than one login
    (secretIdUses), or a callable that returns a fresh one for each login (a
    launcher's file, a response-wrapped token …).

    `vault_addr` is one address (a single server, or a load balancer in front of
    a cluster) or several nodes of one cluster (a list, or comma-separated): a
    request moves on to the next node when one is down or has no active node,
    for up to `failover_seconds` (see failover.py)."""

    def __init__(
        self,
        vault_addr: str | list[str],
        role_id: str,
        secret_id: SecretIdSource,
        creds_path: str,
        *,
        login_path: str,
        ca_cert: str | None = None,
        on_rotate: Callable[[Credential], None] | None = None,
        timeout: float = 10.0,
        failover_seconds: float = 30.0,
        client_factory: Callable[..., hvac.Client] | None = None,
    ):
        self.addresses = VaultAddresses(vault_addr, failover_seconds)
        self._verify, self._timeout = ca_cert or True, timeout
        self._role_id, self._secret_id = role_id, secret_id
        self._creds_path, self._login_path = creds_path.strip("/"), login_path.strip("/")
        self._on_rotate = on_rotate
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._current: tuple[Credential, hvac.Client] | None = None
        self._old: list[tuple[Credential, hvac.Client]] = []
        self.credentials_read = 0
        self.read_failures = 0
        """Logins or credential reads that failed (Vault unreachable past the failover time, or refused)."""
        self._read_at = float("-inf")
        self._thread: threading.Thread | None = None
        self._client_factory = client_factory or hvac.Client
        self._refused: tuple[float, LoginRefused] | None = None

    # --- what the pool calls -------------------------------------------------------

    def credential(self) -> Credential:
        """The credential to connect with now (read on first use)."""
        with self._lock:
            if self._current is None:
                self._current = self._read()
            return self._current[0]

    def connect_kwargs(self) -> dict[str, str]:
        """psycopg connection arguments with the current login (the pool's `kwargs`)."""
        current = self.credential()
        return {"user": current.username, "password": current.password}

    def replace_if_revoked(self, refused: bool = False) -> bool:
        """After a failed connect or a session ended by the server: if Vault no
        longer knows the lease (break-glass), or PostgreSQL refused the login
        (`refused`: the user is gone, though Vault may still be revoking its
        lease), read a new credential now, unless one was read a moment ago (by
        another thread that failed at the same time). True if a fresh one is in use."""
        with self._lock:
            if self._current is None:
                return False
            if time.monotonic() - self._read_at < FRESH_SECONDS:
                return True
            if not refused and self._lease_alive(*self._current):
                return False
            self._raise_if_refused_lately()
            log.warning("credential %s was revoked; reading a new one", self._current[0].username)
            self._rotate_locked()
        return True

    def start(self) -> CredentialSource:
        """Reads the first credential and starts the renewal thread."""
        self.credential()
        self._thread = threading.Thread(target=self._run, name="pgcreds-renewal", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stops renewing and revokes this process's leases (their users are dropped)."""
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=self._timeout)
        with self._lock:
            for credential, client in [*self._old, *([self._current] if self._current else [])]:
                self._retire(credential, client)
            self._old, self._current = [], None

    @property
    def live_leases(self) -> int:
        with self._lock:
            return len(self._old) + (1 if self._current else 0)

    # --- Vault ----------------------------------------------------------------------

    def _raise_if_refused_lately(self) -> None:
        if self._refused and time.monotonic() - self._refused[0] < LOGIN_RETRY_SECONDS:
            raise self._refused[1]

    def _login(self) -> hvac.Client:
        secret_id = self._secret_id() if callable(self._secret_id) else self._secret_id
        client = self._client_factory(
            url=self.addresses.current,
            verify=self._verify,
            timeout=self._timeout,
            adapter=lambda **kwargs: FailoverAdapter(self.addresses, **kwargs),
        )
        try:
            answer = client.adapter.post(
                f"/v1/{self._login_path}", json={"role_id": self._role_id, "secret_id": secret_id}
            )
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden) as error:
            refused = LoginRefused(
                f"Vault refused the AppRole login at {self._login_path} ({str(error).splitlines()[0]}): the "
                "secret-id is used up, expired or wrong. A secret-id allows the role's secretIdUses logins "
                "(default 1) and a revoked or rotated credential needs a new login: give the service a new "
                "secret-id for each login (a file its launcher rewrites: PGCREDS_SECRET_ID_FILE), or raise the "
                f"role's secretIdUses. Not tried again for {LOGIN_RETRY_SECONDS:.0f} s."
            )
            self._refused = (time.monotonic(), refused)
            log.error("%s", refused)
            raise refused from None
        self._refused = None
        client.token = answer["auth"]["client_token"]
        return client

    def _read(self) -> tuple[Credential, hvac.Client]:
        try:
            client = self._login()
            secret = client.read(self._creds_path)
        except Exception:
            self.read_failures += 1
            raise
        seconds = int(secret["lease_duration"])
        credential = Credential(
            secret["data"]["username"],
            secret["data"]["password"],
            secret["lease_id"],
            seconds,
            time.monotonic() + seconds,
        )
        self.credentials_read += 1
        self._read_at = time.monotonic()
        log.info("read credential %s (lease %ss)", credential.username, seconds)
        return credential, client

    def _lease_alive(self, credential: Credential, client: hvac.Client) -> bool:
        try:
            client.sys.read_lease(credential.lease_id)
            return True
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden, hvac.exceptions.InvalidPath):
            return False

    def _renew(self, credential: Credential, client: hvac.Client) -> bool:
        """Renews the token and the lease; False if either is gone."""
        try:
            token = client.auth.token.renew_self(increment=credential.lease_seconds)["auth"]["lease_duration"]
            lease = client.sys.renew_lease(credential.lease_id, increment=credential.lease_seconds)["lease_duration"]
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden, hvac.exceptions.InvalidPath):
            return False
        granted = min(int(token), int(lease))
        credential.expires_at = time.monotonic() + granted
        credential.near_end = granted < credential.lease_seconds
        return True

    def _retire(self, credential: Credential, client: hvac.Client) -> None:
        """Revokes the token that read the credential, and with it the lease (an
        application's policy may not revoke a lease by itself: `default` allows
        revoke-self)."""
        try:
            client.auth.token.revoke_self()
        except hvac.exceptions.VaultError:
            pass  # already gone

    def _rotate_locked(self) -> None:
        """A new credential becomes current; the old one keeps its lease until its
        end (its connections are moved by `on_rotate`), then is forgotten."""
        if self._current is not None:
            self._old.append(self._current)
        self._current = self._read()
        callback = self._on_rotate
        credential = self._current[0]
        if callback:
            threading.Thread(target=callback, args=(credential,), daemon=True).start()

    def tick(self) -> float:
        """One round of the renewal thread: renew, or rotate; the seconds until the next."""
        with self._lock:
            now = time.monotonic()
            # Old credentials: kept until their end, for connections still out; then dropped.
            self._old = [(c, cl) for c, cl in self._old if now < c.expires_at]
            if self._current is None:
                return 1.0
            credential, client = self._current
            if not self._renew(credential, client) or credential.near_end:
                try:
                    self._raise_if_refused_lately()
                    self._rotate_locked()
                except LoginRefused:
                    return LOGIN_RETRY_SECONDS  # said once, in the log and to the callers
            return max(self._current[0].lease_seconds / 3, 0.5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                seconds = self.tick()
            except (hvac.exceptions.VaultError, requests.RequestException) as error:
                # Vault out of reach past the failover time: the credential in use still
                # works until its lease ends; the renewal is tried again shortly.
                log.warning(
                    "renewal failed, trying again in 1 s: %s", str(error).splitlines()[0] if str(error) else error
                )
                seconds = 1.0
            self._wake.wait(timeout=seconds)
            self._wake.clear()
