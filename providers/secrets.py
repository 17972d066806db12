"""A generated password kept only as a secret in the state."""

from __future__ import annotations

import secrets
from typing import Optional

from pulumi import Output, ResourceOptions
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider


class _PasswordProvider(ResourceProvider):
    def create(self, props: dict) -> CreateResult:
        # URL-safe characters only: the value is used in libpq keyword strings.
        return CreateResult("password", {**props, "result": secrets.token_urlsafe(int(props["bytes"]))})

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        changed = olds.get("bytes") != news.get("bytes")
        return DiffResult(changes=changed, replaces=["bytes"] if changed else [])


class RandomPassword(Resource, module="random", name="Password"):
    """A random password (`bytes` of entropy) whose `result` is a secret output."""

    result: Output[str]

    def __init__(self, resource_name: str, *, entropy_bytes: int = 32, opts: Optional[ResourceOptions] = None):
        super().__init__(_PasswordProvider(), resource_name, {"bytes": entropy_bytes, "result": None},
                         ResourceOptions.merge(opts, ResourceOptions(additional_secret_outputs=["result"])))
