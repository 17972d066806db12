"""Dynamic resources for what the vault provider does not do: revoke a Vault
role's leases before the role (or its connection) goes, with hvac; and give a
rotated login its first password back when its connection is made again.

Why it exists: the vault provider deletes a `SecretBackendRole` and its
`SecretBackendConnection` without touching outstanding leases, and Vault then
cannot revoke them any more (`failed to find entry for connection`): the
mount's deletion fails and the leases' PostgreSQL users are never dropped. No
provider resource revokes leases, so this one does, synchronously, so that the
role's revocation statements run while the connection still exists.

The Vault address is an input; the token is read from the environment of the
provider process (VAULT_TOKEN, or BAO_TOKEN for OpenBao) and the CA from
VAULT_CACERT, so neither enters stack config or state.
"""

from __future__ import annotations

import time

from pulumi import Input, Output, ResourceOptions
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from providers._shared import changed, gone, lazy_module

# Loaded on first use, in the process that runs these providers (see lazy_module).
api = lazy_module("providers.vault_api")
pg = lazy_module("providers.pg_sql")


# How long a revoker waits for Vault to revoke its leases (a destroy with 5,000 took
# 68 s here in all: test_churn.py).
REVOKE_DEADLINE_SECONDS = 30 * 60


class _LeaseRevokerProvider(ResourceProvider):
    """Nothing to create; on delete, every lease under `<mount>/creds/<role>` is
    revoked and waited for. A new role, mount or connection replaces it, so the
    old one's leases are revoked before the old objects are deleted."""

    REPLACE_ON = ("mount", "role", "connection")

    def check(self, olds: dict, news: dict) -> CheckResult:
        # Leases live in one Vault. An address that now reaches another Vault (its
        # identity store differs) would leave them, and the engine, behind unseen.
        old, new = olds.get("vault_id"), news.get("vault_id")
        if old and isinstance(new, str) and new and old != new:
            return CheckResult(
                news,
                [
                    CheckFailure(
                        "vault_id",
                        (
                            f"pgcreds:vaultAddress ({news.get('address')}) now reaches another Vault than the one this "
                            "stack's secrets engine and leases are in. Nothing was changed. Moving between Vaults is not "
                            "done in place: set the old address back and `pulumi destroy` (with the old Vault's token), "
                            "then `pulumi up` against the new Vault."
                        ),
                    )
                ],
            )
        return CheckResult(news, [])

    def create(self, props: dict) -> CreateResult:
        return CreateResult(f"{props['mount']}/creds/{props['role']}", dict(props))

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        replaces = changed(olds, news, self.REPLACE_ON)
        # A new address of the same Vault is an update: its leases stay.
        return DiffResult(changes=bool(replaces or changed(olds, news, ("address", "vault_id"))), replaces=replaces)

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        return UpdateResult(dict(news))

    def delete(self, id_: str, props: dict) -> None:
        vault = api.client(props["address"])
        if props["mount"] + "/" not in vault.sys.list_mounted_secrets_engines()["data"]:
            return  # the mount is gone, and its leases with it
        try:
            # Vault revokes them in the background, several at once: one synchronous
            # call runs every revocation statement in turn within one HTTP request,
            # which thousands of leases outlast (measured: 5,000).
            vault.write(f"sys/leases/revoke-prefix/{id_}", sync=False)
        except api.hvac.exceptions.InvalidRequest as error:
            raise RuntimeError(
                f"Vault could not revoke the leases under {id_}: {error}. Nothing was deleted; "
                "fix the cause (PostgreSQL reachable? the revocation statements?) and run "
                "`pulumi destroy` or `pulumi up` again."
            ) from None
        left = api.wait_for_no_leases(vault, id_, REVOKE_DEADLINE_SECONDS)
        if left:
            raise RuntimeError(
                f"Vault has not revoked {left} leases under {id_} after "
                f"{REVOKE_DEADLINE_SECONDS // 60} minutes (PostgreSQL reachable? the revocation "
                "statements?). Nothing was deleted; Vault keeps trying: run `pulumi destroy` or "
                "`pulumi up` again once it is done."
            )


class VaultLeaseRevoker(Resource, module="vault", name="LeaseRevoker"):
    """Revokes the leases of `<mount>/creds/<role>` when deleted or replaced.
    Make it depend on the role, so that it goes first. `vault_id` identifies the
    Vault (its identity mount's uuid): a preview refuses a move to another one."""

    def __init__(
        self,
        resource_name: str,
        *,
        address: Input[str],
        vault_id: Input[str],
        mount: Input[str],
        role: Input[str],
        connection: Input[str],
        opts: ResourceOptions | None = None,
    ):
        super().__init__(
            _LeaseRevokerProvider(),
            resource_name,
            {
                "address": address,
                "vault_id": vault_id,
                "mount": mount,
                "role": role,
                "connection": connection,
            },
            opts,
        )


# --- a platform stack's mount, while application stacks use it -------------------


class _PlatformInUseProvider(ResourceProvider):
    """Nothing to create; its delete refuses while any connection is left in the
    mount (an application stack's), so that destroying a platform stack never
    takes the applications' connections, roles and leases with it."""

    def create(self, props: dict) -> CreateResult:
        return CreateResult(props["mount"], dict(props))

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        replaces = changed(olds, news, ("mount",))
        return DiffResult(changes=bool(replaces or changed(olds, news, ("address",))), replaces=replaces)

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        return UpdateResult(dict(news))

    def delete(self, id_: str, props: dict) -> None:
        vault = api.client(props["address"])
        if id_ + "/" not in vault.sys.list_mounted_secrets_engines()["data"]:
            return
        try:
            connections = vault.list(f"{id_}/config") or {}
        except api.hvac.exceptions.InvalidPath:
            return
        names = sorted((connections.get("data") or {}).get("keys") or [])
        if names:
            raise RuntimeError(
                f"the mount {id_!r} still holds the connections {', '.join(names)} of application stacks: "
                "`pulumi destroy` those stacks first (each removes its own connection, roles and leases). "
                "Nothing of the platform was deleted."
            )


class PlatformInUse(Resource, module="vault", name="PlatformInUse"):
    """Stops a platform stack's destroy while application stacks still use its
    mount. Make it depend on the mount, so that it goes first."""

    def __init__(
        self, resource_name: str, *, address: Input[str], mount: Input[str], opts: ResourceOptions | None = None
    ):
        super().__init__(_PlatformInUseProvider(), resource_name, {"address": address, "mount": mount}, opts)


# --- the first password of a rotated login -------------------------------------


class _FirstPasswordProvider(ResourceProvider):
    """With rotate-root only Vault knows a login's password, so a connection made
    again (after the mount or the connection was deleted behind Pulumi's back)
    cannot log in with the first password from state. This sets the login's
    password to that first one right before the connection is made: on create,
    and again whenever a refresh finds the connection gone (`read` reports this
    resource gone with it). Never while the connection exists: that would cut
    Vault off."""

    REPLACE_ON = ("login", "server", "mount", "connection_name")

    def create(self, props: dict) -> CreateResult:
        with pg.connect(props["connection"]) as conn:
            conn.execute(
                pg.sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(
                    pg.sql.Identifier(props["login"]), pg.sql.Literal(props["password"])
                )
            )
        generation = str(time.time_ns())  # what the rotation step waits for, to rotate again
        return CreateResult(f"{props['mount']}/config/{props['connection_name']}", {**props, "generation": generation})

    def read(self, id_: str, props: dict) -> ReadResult:
        try:
            found = api.client(props["address"]).read(id_)
        except api.hvac.exceptions.InvalidPath:
            found = None
        return ReadResult(id_, props) if found else gone()

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        # The password is left out: sending it again while the connection exists
        # would replace Vault's own.
        replaces = changed(olds, news, self.REPLACE_ON)
        return DiffResult(changes=bool(replaces or changed(olds, news, ("address",))), replaces=replaces)

    def update(self, _id: str, olds: dict, news: dict) -> UpdateResult:
        return UpdateResult({**news, "generation": olds.get("generation")})


class FirstLoginPassword(Resource, module="vault", name="FirstLoginPassword"):
    """Sets `login`'s password to `password` whenever the Vault connection at
    `<mount>/config/<connection_name>` is about to be made (again). Make the
    connection depend on it; `generation` changes each time it did so."""

    generation: Output[str]

    def __init__(
        self,
        resource_name: str,
        *,
        connection: Input[dict],
        login: Input[str],
        password: Input[str],
        server: Input[str],
        address: Input[str],
        mount: Input[str],
        connection_name: Input[str],
        opts: ResourceOptions | None = None,
    ):
        super().__init__(
            _FirstPasswordProvider(),
            resource_name,
            {
                "connection": connection,
                "login": login,
                "password": password,
                "server": server,
                "address": address,
                "mount": mount,
                "connection_name": connection_name,
                "generation": None,
            },
            opts,
        )
