"""TerminationGuard: refuses `pulumi destroy` while the Aiven service has
termination protection, before anything is deleted.

Aiven refuses to delete a protected service, and Pulumi's `protect` refuses to
delete the resource, but both only when the destroy reaches the service: last,
after every table, role, grant and Vault object that depends on it is already
gone (measured with the aiven plugin 6.58.0 and CLI 3.274). The guard depends
on all of those, so the engine deletes it first; while protection is on its
delete fails and the engine stops with nothing deleted. No provider has such a
resource, hence this one: it touches no server at all.
"""

from __future__ import annotations

from typing import Any

from pulumi import Input, ResourceOptions
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult


class TerminationProtected(Exception):
    """A destroy (or replacement) of a protected service was refused."""


def refusal(service_name: str) -> str:
    return (
        f"the Aiven service {service_name!r} has termination protection, so `pulumi destroy` stopped before "
        "deleting anything. To remove the stack: `pulumi config set pgcreds:aivenTerminationProtection false`, "
        "`pulumi up`, then `pulumi destroy`"
    )


class _TerminationGuardProvider(ResourceProvider):
    def create(self, props: dict) -> CreateResult:
        return CreateResult(id_=f"termination-guard-{props['service_name']}", outs=props)

    def diff(self, id_: str, olds: dict, news: dict) -> DiffResult:
        changes = [key for key in ("service_name", "protected") if olds.get(key) != news.get(key)]
        return DiffResult(changes=bool(changes), replaces=[], delete_before_replace=False)

    def update(self, id_: str, olds: dict, news: dict) -> UpdateResult:
        return UpdateResult(outs=news)

    def delete(self, id_: str, props: dict) -> None:
        if props.get("protected"):
            raise TerminationProtected(refusal(props["service_name"]))


class TerminationGuard(Resource, module="aiven", name="TerminationGuard"):
    def __init__(
        self, name: str, *, service_name: Input[str], protected: Input[bool], opts: ResourceOptions | None = None
    ) -> None:
        props: dict[str, Any] = {"service_name": service_name, "protected": protected}
        super().__init__(_TerminationGuardProvider(), name, props, opts)
