"""Whom to trust, and with which token: helpers with no heavy import, used by
the program process too."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def ca_file(pem: str) -> str:
    """libpq and the postgresql provider read a CA only from a file: each PEM
    goes in a private file named by its hash, written once per machine."""
    folder = Path(tempfile.gettempdir()) / f"pgcreds-ca-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / (hashlib.sha256(pem.encode()).hexdigest()[:16] + ".pem")
    if not path.exists():
        path.write_text(pem)
    return str(path)


def operator_token() -> str | None:
    """The operator's Vault token, where the vault provider reads it (or OpenBao's name)."""
    return os.environ.get("VAULT_TOKEN") or os.environ.get("BAO_TOKEN")


def vault_ca_problem() -> str | None:
    """Why VAULT_CACERT cannot be used, or None: it names a file that is not there."""
    cafile = os.environ.get("VAULT_CACERT")
    if cafile and not os.path.isfile(cafile):
        return (
            f"VAULT_CACERT names {cafile!r}, which is not a file: point it at the CA certificate that "
            "signed Vault's (here: `. local/dev-env.sh` sets it), or unset it to trust the system's CAs"
        )
    return None


def vault_tls_verify() -> str | bool:
    """What every hvac client verifies Vault's certificate with: the CA file in
    VAULT_CACERT (read now, not when hvac was imported), else the system's CAs."""
    return os.environ.get("VAULT_CACERT") or True


def server_certificate_problem(host: str, port: int, ca_pem: str, timeout: float = 5) -> str:
    """Why a PostgreSQL server's certificate fails verify-full against `ca_pem` for
    `host` (libpq's and Vault's check), or "" if it passes or the server cannot be
    reached (the providers then say so). PostgreSQL starts TLS inside its own
    protocol: an SSLRequest first, answered `S`."""
    import socket
    import ssl

    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            raw.sendall((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"))
            if raw.recv(1) != b"S":
                return f"the server at {host}:{port} does not offer TLS"
            try:
                context = ssl.create_default_context(cadata=ca_pem)
            except ssl.SSLError as unreadable:
                return f"the CA is not a PEM certificate ({unreadable.reason or unreadable})"
            with context.wrap_socket(raw, server_hostname=host):
                return ""
    except ssl.SSLCertVerificationError as refused:
        return refused.verify_message or str(refused)
    except (OSError, ssl.SSLError):
        return ""
