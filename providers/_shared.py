"""Small helpers every dynamic provider here uses."""

from __future__ import annotations

import hashlib
import importlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Sequence

from pulumi.dynamic import ReadResult


class lazy_module:  # noqa: N801 - used like a module
    """The module `name`, imported on first use of one of its attributes. The
    program process pickles these providers but never calls them; the process
    that runs them imports the module (with psycopg or hvac, about 0.1 s each)
    when it must. Thread-safe, as the provider process serves calls in threads
    (importlib's LazyLoader is not, in Python 3.11)."""

    def __init__(self, name: str):
        self._name, self._module, self._lock = name, None, threading.Lock()

    def __getattr__(self, attribute: str):
        if self._module is None:
            with self._lock:
                if self._module is None:
                    self._module = importlib.import_module(self._name)
        return getattr(self._module, attribute)


def changed(olds: dict, news: dict, keys: Sequence[str]) -> list[str]:
    """The keys whose values differ between the old and the new properties."""
    return [k for k in keys if olds.get(k) != news.get(k)]


def gone() -> ReadResult:
    """What `read` returns for an object deleted behind Pulumi's back: an empty
    id, so that a refresh drops it from the state and the next `up` makes it again."""
    return ReadResult("", {})


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


def vault_tls_verify() -> str | bool:
    """What every hvac client verifies Vault's certificate with: the CA file in
    VAULT_CACERT (read now, not when hvac was imported), else the system's CAs."""
    return os.environ.get("VAULT_CACERT") or True
