"""Dynamic resources for the Vault database secrets engine, with hvac.

The Vault address is an input; the token is read from the environment of the
provider process (VAULT_TOKEN, or BAO_TOKEN for OpenBao), so it never enters
stack config or state. Everything used is in the open-source Vault API that
OpenBao also serves.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import hvac
import hvac.exceptions
import requests
from pulumi import Input, Output, ResourceOptions
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from providers._shared import changed, gone

REQUEST_TIMEOUT_SECONDS = 30


class VaultUnreachable(Exception):
    """Vault could not be reached, or the token was missing or refused."""


def vault_token() -> str:
    token = os.environ.get("VAULT_TOKEN") or os.environ.get("BAO_TOKEN")
    if not token:
        raise VaultUnreachable(
            "no Vault token: set VAULT_TOKEN (or BAO_TOKEN) in the environment of `pulumi`; "
            "it is deliberately not a stack setting, so that it never lands in config or state")
    return token


def client(address: str) -> hvac.Client:
    vault = hvac.Client(url=address, token=vault_token(), timeout=REQUEST_TIMEOUT_SECONDS)
    try:
        if not vault.is_authenticated():
            raise VaultUnreachable(f"Vault at {address} refused the token in VAULT_TOKEN; check it has not expired")
    except requests.exceptions.RequestException as error:
        raise VaultUnreachable(
            f"cannot reach Vault at {address} ({type(error).__name__}). Check that it is running and "
            "the pgcreds:vaultAddress setting; a later `pulumi up` picks up where this one stopped.") from None
    return vault


def revoke_leases(vault: hvac.Client, prefix: str) -> None:
    """Revokes every lease under `prefix` and waits for it: deleting a role or
    mount with leases outstanding would otherwise orphan PostgreSQL roles."""
    vault.sys.revoke_prefix(prefix)



# --- mount --------------------------------------------------------------------


class _MountProvider(ResourceProvider):
    def create(self, props: dict) -> CreateResult:
        vault = client(props["address"])
        path = props["path"]
        existing = vault.sys.list_mounted_secrets_engines()["data"].get(path + "/")
        if existing is None:
            vault.sys.enable_secrets_engine("database", path=path, description=props["description"])
        elif existing["type"] != "database":
            raise ValueError(f"Vault already has a {existing['type']!r} secrets engine at {path!r}; "
                             "choose another pgcreds:vaultMountPath")
        return CreateResult(path, dict(props))

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        replaces = changed(olds, news, ("path",))
        # A new address is an update, never a replacement: the same Vault under
        # another name must not lose its mount (and so every lease).
        changes = replaces or changed(olds, news, ("address", "description"))
        return DiffResult(changes=bool(changes), replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        client(news["address"]).sys.tune_mount_configuration(news["path"], description=news["description"])
        return UpdateResult(dict(news))

    def read(self, id_: str, props: dict) -> ReadResult:
        mounts = client(props["address"]).sys.list_mounted_secrets_engines()["data"]
        if id_ + "/" not in mounts:
            return gone()
        return ReadResult(id_, {**props, "description": mounts[id_ + "/"].get("description", "")})

    def delete(self, id_: str, props: dict) -> None:
        vault = client(props["address"])
        if id_ + "/" in vault.sys.list_mounted_secrets_engines()["data"]:
            revoke_leases(vault, id_ + "/")
            vault.sys.disable_secrets_engine(id_)


class VaultDatabaseMount(Resource, module="vault", name="DatabaseMount"):
    """A database secrets engine mounted at `path`."""

    path: Output[str]

    def __init__(self, resource_name: str, *, address: Input[str], path: Input[str],
                 description: str, opts: Optional[ResourceOptions] = None):
        super().__init__(_MountProvider(), resource_name,
                         {"address": address, "path": path, "description": description}, opts)


class _EngineObjectProvider(ResourceProvider):
    """An object written whole under `<mount>/<KIND>/<name>` (a connection or a
    role): create and update are the same write; mount and name replace it."""

    KIND: str
    FIELDS: tuple[str, ...]

    def _write(self, props: dict) -> None:
        raise NotImplementedError

    def create(self, props: dict) -> CreateResult:
        self._write(props)
        return CreateResult(f"{props['mount']}/{self.KIND}/{props['name']}", dict(props))

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        replaces = changed(olds, news, ("mount", "name"))
        changes = replaces or changed(olds, news, ("address",) + self.FIELDS)
        return DiffResult(changes=bool(changes), replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        self._write(news)
        return UpdateResult(dict(news))


# --- connection ---------------------------------------------------------------


class _ConnectionProvider(_EngineObjectProvider):
    KIND = "config"
    FIELDS = ("connection_url", "username", "password", "allowed_roles", "username_template",
              "password_authentication")

    def _write(self, props: dict) -> None:
        extra: dict[str, Any] = {"password_authentication": props["password_authentication"]}
        if props.get("username_template"):
            extra["username_template"] = props["username_template"]
        client(props["address"]).secrets.database.configure(
            name=props["name"],
            plugin_name="postgresql-database-plugin",
            mount_point=props["mount"],
            verify_connection=True,
            connection_url=props["connection_url"],
            username=props["username"],
            password=props["password"],
            allowed_roles=list(props["allowed_roles"]),
            **extra,
        )

    def read(self, id_: str, props: dict) -> ReadResult:
        try:
            data = client(props["address"]).secrets.database.read_connection(
                props["name"], mount_point=props["mount"])["data"]
        except hvac.exceptions.InvalidPath:
            return gone()
        details = data.get("connection_details", {})
        return ReadResult(id_, {**props, "allowed_roles": sorted(data.get("allowed_roles") or []),
                                "connection_url": details.get("connection_url", props["connection_url"]),
                                "username": details.get("username", props["username"])})

    def delete(self, _id: str, props: dict) -> None:
        vault = client(props["address"])
        if props["mount"] + "/" in vault.sys.list_mounted_secrets_engines()["data"]:
            vault.secrets.database.delete_connection(props["name"], mount_point=props["mount"])


class VaultDatabaseConnection(Resource, module="vault", name="DatabaseConnection"):
    """A PostgreSQL connection of a database secrets engine. `password` is a
    secret input; `connection_url` must use {{username}}/{{password}} templating."""

    def __init__(self, resource_name: str, *, address: Input[str], mount: Input[str], name: str,
                 connection_url: Input[str], username: Input[str], password: Input[str],
                 allowed_roles: Sequence[str], username_template: Optional[str] = None,
                 opts: Optional[ResourceOptions] = None):
        super().__init__(_ConnectionProvider(), resource_name, {
            "address": address, "mount": mount, "name": name, "connection_url": connection_url,
            "username": username, "password": password, "allowed_roles": sorted(allowed_roles),
            "username_template": username_template, "password_authentication": "scram-sha-256",
        }, opts)


# --- role ---------------------------------------------------------------------


class _RoleProvider(_EngineObjectProvider):
    KIND = "roles"
    FIELDS = ("db_name", "creation_statements", "revocation_statements", "default_ttl", "max_ttl")

    def _write(self, props: dict) -> None:
        client(props["address"]).secrets.database.create_role(
            name=props["name"],
            db_name=props["db_name"],
            creation_statements=list(props["creation_statements"]),
            revocation_statements=list(props["revocation_statements"]),
            default_ttl=int(props["default_ttl"]),
            max_ttl=int(props["max_ttl"]),
            mount_point=props["mount"],
        )

    def read(self, id_: str, props: dict) -> ReadResult:
        try:
            data = client(props["address"]).secrets.database.read_role(
                props["name"], mount_point=props["mount"])["data"]
        except hvac.exceptions.InvalidPath:
            return gone()
        return ReadResult(id_, {**props, **{k: data[k] for k in self.FIELDS if k in data}})

    def delete(self, _id: str, props: dict) -> None:
        vault = client(props["address"])
        if props["mount"] + "/" not in vault.sys.list_mounted_secrets_engines()["data"]:
            return
        # Leases first: their revocation runs the role's revocation statements,
        # which Vault can no longer find once the role is gone.
        revoke_leases(vault, f"{props['mount']}/creds/{props['name']}")
        vault.secrets.database.delete_role(props["name"], mount_point=props["mount"])


class VaultDatabaseRole(Resource, module="vault", name="DatabaseRole"):
    """A role from which applications read credentials at `<mount>/creds/<name>`."""

    def __init__(self, resource_name: str, *, address: Input[str], mount: Input[str], name: str,
                 db_name: Input[str], creation_statements: Sequence[str],
                 revocation_statements: Sequence[str], default_ttl: int, max_ttl: int,
                 opts: Optional[ResourceOptions] = None):
        super().__init__(_RoleProvider(), resource_name, {
            "address": address, "mount": mount, "name": name, "db_name": db_name,
            "creation_statements": list(creation_statements),
            "revocation_statements": list(revocation_statements),
            "default_ttl": default_ttl, "max_ttl": max_ttl,
        }, opts)
