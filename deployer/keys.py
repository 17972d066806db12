"""The stacks' transit keys: kept recoverable, and never silently made again.

Each stack's secrets are encrypted by its transit key (`pgcreds-<stack>`). A key
deleted (with `deletion_allowed`) or lost with the Vault it lived in leaves the
stack unreadable; a new key under the old name would not decrypt it either, and
turns `encryption key not found` into `cipher: message authentication failed`.
So the bootstrap makes keys that may be backed up, writes each key's backup to a
folder of the operator's (as secret as the key: mode 0600), and refuses to make a
key for a stack whose state already exists. The way back is a restore:

    python -m deployer.keys restore --stack dev --backup-dir /var/tmp/pg-dynamic-creds/transit-backups

Reads VAULT_ADDR, VAULT_TOKEN (an operator's) and VAULT_CACERT.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import hvac
import hvac.exceptions

from clients.tls import operator_token, vault_tls_verify
from deployer import TRANSIT_MOUNT, transit_key


def backup_file(folder: Path, stack: str) -> Path:
    return folder / f"{transit_key(stack)}.backup"


def key_exists(client: hvac.Client, stack: str) -> bool:
    try:
        client.secrets.transit.read_key(transit_key(stack), mount_point=TRANSIT_MOUNT)
        return True
    except hvac.exceptions.InvalidPath:
        return False


def back_up(client: hvac.Client, stack: str, folder: Path) -> Path:
    """Makes the key exportable in a backup (a one-way switch of Vault's) and writes
    its backup, every version of it, to `folder` (0700) as `<key>.backup` (0600)."""
    key = transit_key(stack)
    client.write(f"{TRANSIT_MOUNT}/keys/{key}/config", exportable=True, allow_plaintext_backup=True)
    backup = client.read(f"{TRANSIT_MOUNT}/backup/{key}")["data"]["backup"]
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    target, temporary = backup_file(folder, stack), backup_file(folder, stack).with_suffix(".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(backup)
    os.replace(temporary, target)
    return target


def restore(client: hvac.Client, stack: str, folder: Path) -> None:
    """Puts a deleted key back from its backup (every version: every secret it
    encrypted decrypts again)."""
    source = backup_file(folder, stack)
    if not source.is_file():
        raise SystemExit(
            f"keys: no backup of {transit_key(stack)} in {folder} (the bootstrap writes one with "
            "--key-backup-dir). Without it the stack's secrets cannot be read again: see docs/operations.md, "
            '"When something is stuck". Nothing was changed.'
        )
    if key_exists(client, stack):
        raise SystemExit(
            f"keys: Vault has a key {transit_key(stack)} already; a restore would not replace it. Nothing was changed."
        )
    client.write(f"{TRANSIT_MOUNT}/restore/{transit_key(stack)}", backup=source.read_text().strip())


def client_from_environment() -> hvac.Client:
    address, token = os.environ.get("VAULT_ADDR", ""), operator_token()
    if not address or not token:
        raise SystemExit("keys: VAULT_ADDR and VAULT_TOKEN (an operator's) must be set")
    return hvac.Client(url=address, token=token, verify=vault_tls_verify())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Back up or restore a stack's transit key.")
    parser.add_argument("action", choices=("backup", "restore"))
    parser.add_argument("--stack", required=True)
    parser.add_argument("--backup-dir", type=Path, default=Path(os.environ.get("PGCREDS_KEY_BACKUP_DIR", ".")))
    args = parser.parse_args(argv)
    client = client_from_environment()
    if args.action == "restore":
        restore(client, args.stack, args.backup_dir)
        print(
            f"keys: {transit_key(args.stack)} restored from {backup_file(args.backup_dir, args.stack)}", file=sys.stderr
        )
    else:
        print(
            f"keys: {transit_key(args.stack)} backed up to {back_up(client, args.stack, args.backup_dir)}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
