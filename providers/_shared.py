"""Small helpers every dynamic provider here uses (client helpers shared with
the operations scripts are in `clients/`)."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Sequence
from types import ModuleType

from pulumi.dynamic import ReadResult
from pulumi.runtime.rpc import UNKNOWN


class lazy_module:
    """The module `name`, imported on first use of one of its attributes. The
    program process pickles these providers but never calls them; the process
    that runs them imports the module (with psycopg or hvac, about 0.1 s each)
    when it must. Thread-safe, as the provider process serves calls in threads
    (importlib's LazyLoader is not, in Python 3.11)."""

    def __init__(self, name: str):
        self._name, self._lock = name, threading.Lock()
        self._module: ModuleType | None = None

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


def known(value: object) -> bool:
    """Whether an input is known (in a preview, an output not made yet is not)."""
    return isinstance(value, str) and bool(value) and value != UNKNOWN


def stack_mark(project: str, stack: str) -> str:
    """What the objects a stack makes carry to say so (a PostgreSQL role's comment,
    a Vault mount's description): it outlives a lost state, so that
    `python -m deployer.orphans` can find them and the role claims can tell a
    lost state from a name taken by someone else."""
    return f"{mark_prefix()}{project}/{stack}"


def mark_prefix() -> str:
    """What every stack's mark begins with."""
    return "pg-dynamic-creds stack "
