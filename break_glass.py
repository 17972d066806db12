"""Break-glass: revoke every lease of one application role (or of the whole
mount) through Vault, so the revocation statements run: each user's open
sessions end and the user is dropped.

    pulumi stack output --json | python break_glass.py --role metrics-readwrite
    pulumi stack output --json | python break_glass.py --role all

Reads VAULT_TOKEN (or BAO_TOKEN); revoking by prefix needs `sudo` on
sys/leases/revoke-prefix. To stop new credentials as well, set `locked: true`
on the role in pgcreds:roles and run `pulumi up`. Exits 1 if any lease is left.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import hvac
import hvac.exceptions

from clients.tls import operator_token, vault_tls_verify
from smoke_check import read_outputs


class BreakGlassError(Exception):
    """A request that cannot be carried out; the message says why and what to do."""


def lease_prefix(outputs: dict[str, Any], role: str) -> str:
    """`<mount>/creds/<role>` for one role, `<mount>/creds` for all of them."""
    known = sorted(outputs.get("credentialPaths") or {})
    if role == "all":
        return f"{outputs['vaultMountPath']}/creds"
    if role not in known:
        raise BreakGlassError(f"no role {role!r} in this stack; ROLE must be one of {', '.join(known)} or all")
    return outputs["credentialPaths"][role]


def count_leases(vault: hvac.Client, prefix: str) -> int:
    """Leases under `prefix`, however deep (LIST sys/leases/lookup, recursively)."""
    try:
        keys = vault.sys.list_leases(prefix)["data"]["keys"]
    except hvac.exceptions.InvalidPath:
        return 0
    return sum(count_leases(vault, f"{prefix}/{key.rstrip('/')}") if key.endswith("/") else 1 for key in keys)


def revoke(vault: hvac.Client, outputs: dict[str, Any], role: str) -> tuple[int, int, float]:
    """Revokes synchronously (Vault runs each lease's revocation statements before
    it answers). Returns (leases before, leases left, seconds taken)."""
    prefix = lease_prefix(outputs, role)
    before = count_leases(vault, prefix)
    started = time.monotonic()
    vault.sys.revoke_prefix(prefix)
    took = time.monotonic() - started
    return before, count_leases(vault, prefix), took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", required=True, help="an application role of the stack, or all")
    parser.add_argument("--outputs", default="-", help="stack outputs JSON file (default: standard input)")
    args = parser.parse_args()
    outputs = read_outputs(args.outputs)
    token = operator_token()
    if not token:
        print("break-glass: export VAULT_TOKEN (or BAO_TOKEN) first", file=sys.stderr)
        return 2
    vault = hvac.Client(url=outputs["vaultAddress"], token=token, timeout=300, verify=vault_tls_verify())
    try:
        before, left, took = revoke(vault, outputs, args.role)
    except BreakGlassError as error:
        print(f"break-glass: {error}", file=sys.stderr)
        return 2
    except hvac.exceptions.Forbidden:
        print(
            "break-glass: this Vault token may not revoke by prefix (it needs update and sudo on "
            "sys/leases/revoke-prefix/<mount>/creds)",
            file=sys.stderr,
        )
        return 2
    print(
        f"break-glass: {lease_prefix(outputs, args.role)}: revoked {before - left} of {before} leases "
        f"in {took:.2f} s; {left} left"
    )
    return 0 if left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
