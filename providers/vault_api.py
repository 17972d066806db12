"""hvac clients of the dynamic providers here, made from the environment.

A module of its own so that hvac (with requests, about 0.1 s to import) is
loaded only by the process that calls Vault: `providers.vault` loads it lazily.
"""

from __future__ import annotations

import hvac
import hvac.exceptions
import requests

from clients.tls import operator_token, vault_tls_verify

REQUEST_TIMEOUT_SECONDS = 120


class VaultUnreachable(Exception):
    """Vault could not be reached, or the token was missing or refused."""


def client(address: str) -> hvac.Client:
    token = operator_token()
    if not token:
        raise VaultUnreachable(
            "no Vault token: set VAULT_TOKEN (or BAO_TOKEN) in the environment of `pulumi`; "
            "it is deliberately not a stack setting, so that it never lands in config or state"
        )
    vault = hvac.Client(url=address, token=token, timeout=REQUEST_TIMEOUT_SECONDS, verify=vault_tls_verify())
    try:
        if not vault.is_authenticated():
            raise VaultUnreachable(f"Vault at {address} refused the token in VAULT_TOKEN; check it has not expired")
    except requests.exceptions.RequestException as error:
        raise VaultUnreachable(
            f"cannot reach Vault at {address} ({type(error).__name__}). Check that it is running and "
            "the pgcreds:vaultAddress setting; a later `pulumi up` picks up where this one stopped."
        ) from None
    return vault


def wait_for_no_leases(vault: hvac.Client, prefix: str, deadline_seconds: float) -> int:
    """Waits until Vault holds no lease under `prefix`; how many are left at the deadline."""
    import time

    stop = time.monotonic() + deadline_seconds
    while True:
        try:
            left = len(vault.sys.list_leases(prefix=prefix)["data"]["keys"])
        except hvac.exceptions.InvalidPath:
            return 0  # (Vault answers 404 for a prefix with no lease)
        if time.monotonic() >= stop:
            return left
        time.sleep(0.5)
