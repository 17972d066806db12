"""Several addresses of one Vault cluster, and an hvac adapter that moves to the
next one when a node cannot be reached or has no active node to forward to.

Why addresses and not standby forwarding alone: every node of a raft cluster
forwards a request to the active node, so any live node will do; but the node
a client was given may be the one that died. A load balancer in front of the
cluster is one answer (then give that one address); a list of the nodes is the
answer without one. Either way an election takes a few seconds, during which
every node answers 5xx: the request is tried again, node after node, for up to
`failover_seconds`.

A request whose answer was lost (a read timeout) may have been served: a login
or a credential read is then done twice. The extra lease is revoked with the
token that read it (`CredentialSource` revokes its tokens, and their leases,
when it retires a credential); an extra login's token ends with its TTL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import hvac.exceptions
import requests
from hvac.adapters import JSONAdapter

log = logging.getLogger("pgcreds_client")

# The node is down or unreachable, or it is up and has no active node (an election):
# another node, or the same one a moment later, may serve the request.
UNAVAILABLE = (
    requests.ConnectionError,
    requests.Timeout,
    hvac.exceptions.VaultDown,
    hvac.exceptions.BadGateway,
    hvac.exceptions.InternalServerError,
)
PAUSE_SECONDS = 0.2


class VaultAddresses:
    """The nodes of one Vault cluster (or one address: a load balancer, a single
    server), shared by every client of a CredentialSource so that they all move on
    together. `addresses` is a list or a comma-separated string."""

    def __init__(self, addresses: str | Sequence[str], failover_seconds: float = 30.0):
        listed = addresses.split(",") if isinstance(addresses, str) else list(addresses)
        self.addresses = [address.strip().rstrip("/") for address in listed if address.strip()]
        if not self.addresses:
            raise ValueError("no Vault address given (VAULT_ADDR, or several: PGCREDS_VAULT_ADDRS=https://a:8200,…)")
        self.failover_seconds = failover_seconds
        self._index = 0
        self._lock = threading.Lock()
        self.failovers = 0
        """How many times a request moved on to another address (or waited for the same one)."""

    @property
    def current(self) -> str:
        with self._lock:
            return self.addresses[self._index]

    def failed(self, address: str, error: Exception) -> None:
        """`address` did not serve a request: the next one is current (unless another
        thread has moved on already)."""
        with self._lock:
            self.failovers += 1
            if self.addresses[self._index] != address:
                return
            self._index = (self._index + 1) % len(self.addresses)
            following = self.addresses[self._index]
        log.warning(
            "Vault at %s did not serve a request (%s); trying %s",
            address,
            type(error).__name__,
            following,
        )


class FailoverAdapter(JSONAdapter):
    """hvac's JSON adapter on the current address of `addresses`, moving on as above."""

    def __init__(self, addresses: VaultAddresses, **kwargs):
        kwargs["base_uri"] = addresses.current
        super().__init__(**kwargs)
        self._addresses = addresses

    def request(self, method, url, headers=None, raise_exception=True, **kwargs):
        deadline = time.monotonic() + self._addresses.failover_seconds
        while True:
            address = self.base_uri = self._addresses.current
            try:
                return super().request(method, url, headers=headers, raise_exception=raise_exception, **kwargs)
            except UNAVAILABLE as error:
                self._addresses.failed(address, error)
                if time.monotonic() + PAUSE_SECONDS >= deadline:
                    raise
                time.sleep(PAUSE_SECONDS)
