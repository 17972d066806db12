"""Small helpers every dynamic provider here uses."""

from __future__ import annotations

from typing import Sequence

from pulumi.dynamic import ReadResult


def changed(olds: dict, news: dict, keys: Sequence[str]) -> list[str]:
    """The keys whose values differ between the old and the new properties."""
    return [k for k in keys if olds.get(k) != news.get(k)]


def gone() -> ReadResult:
    """What `read` returns for an object deleted behind Pulumi's back: an empty
    id, so that a refresh drops it from the state and the next `up` makes it again."""
    return ReadResult("", {})
