"""A psycopg connection pool on a CredentialSource: every new connection logs in
with the current credential, no connection outlives its lease, a rotation moves
the pool to the new credential without failing a query, and a revoked
credential is replaced at the first failed query, which is run again."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from pgcreds_client.credentials import Credential, CredentialSource

log = logging.getLogger("pgcreds_client")
T = TypeVar("T")

# Errors that mean the connection (or the login) is gone, not that the query was wrong.
CONNECTION_LOST = (psycopg.OperationalError, PoolTimeout)
# PostgreSQL's words when the login itself is refused: the user was dropped.
LOGIN_REFUSED = ("password authentication failed", "does not exist")


def login_refused(error: Exception) -> bool:
    """The pool could not log in (a timeout waiting for a connection counts: its
    connection attempts were refused), as opposed to a session cut short."""
    return isinstance(error, PoolTimeout) or any(words in str(error) for words in LOGIN_REFUSED)


class RotatingPool:
    """`run(work)` hands `work` a connection (in a transaction) and runs it again,
    up to `attempts` times, when the connection was lost: the server ended it
    (a revocation terminates its user's sessions) or the login was refused."""

    def __init__(
        self,
        source: CredentialSource,
        conninfo: str,
        *,
        min_size: int = 1,
        max_size: int = 4,
        attempts: int = 4,
        timeout: float = 5.0,
        **pool_kwargs: Any,
    ):
        self.source = source
        self.attempts = attempts
        self.retried = 0
        self._retry_lock = threading.Lock()
        first = source.credential()
        # No connection outlives its lease: PostgreSQL checks a password only at connect.
        lifetime = max(first.lease_seconds / 2, 1.0)
        self.pool = ConnectionPool(
            conninfo,
            kwargs=source.connect_kwargs,
            min_size=min_size,
            max_size=max_size,
            max_lifetime=lifetime,
            timeout=timeout,
            check=ConnectionPool.check_connection,
            open=True,
            name="pgcreds",
            **pool_kwargs,
        )

    def moved_to(self, credential: Credential) -> None:
        """The source's `on_rotate`: idle connections are closed now and those in
        use when they come back; new ones log in with `credential`."""
        log.info("moving the pool to credential %s", credential.username)
        self.pool.drain()

    def run(self, work: Callable[[psycopg.Connection], T]) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                with self.pool.connection() as conn:
                    return work(conn)
            except CONNECTION_LOST as error:
                if attempt == self.attempts:
                    raise
                with self._retry_lock:
                    self.retried += 1
                log.warning("connection lost (%s); trying again", type(error).__name__)
                if self.source.replace_if_revoked(refused=login_refused(error)):
                    self.pool.drain()
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.pool.close()


def connect_pool(
    vault_addr: str | list[str],
    role_id: str,
    secret_id: Any,
    creds_path: str,
    login_path: str,
    conninfo: str,
    *,
    ca_cert: str | None = None,
    **pool_kwargs: Any,
) -> RotatingPool:
    """A started CredentialSource and its RotatingPool, wired together. `vault_addr`:
    one address, or the nodes of a cluster (a list or comma-separated; see failover.py)."""
    holder: dict[str, RotatingPool] = {}
    source = CredentialSource(
        vault_addr,
        role_id,
        secret_id,
        creds_path,
        login_path=login_path,
        ca_cert=ca_cert,
        on_rotate=lambda credential: holder["pool"].moved_to(credential),
    )
    source.start()
    holder["pool"] = RotatingPool(source, conninfo, **pool_kwargs)
    return holder["pool"]
