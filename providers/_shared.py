"""Small helpers every dynamic provider here uses."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Sequence

from pulumi.dynamic import ReadResult


def lazy_module(name: str) -> ModuleType:
    """The module `name`, run on first use of one of its attributes. The program
    process pickles these providers but never calls them; the process that runs
    them loads the module (with psycopg or hvac, about 0.1 s each) when it must."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


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


def vault_tls_verify() -> str | bool:
    """What every hvac client verifies Vault's certificate with: the CA file in
    VAULT_CACERT (read now, not when hvac was imported), else the system's CAs."""
    return os.environ.get("VAULT_CACERT") or True
