"""AppIdentities: how applications log in to Vault as themselves. One AppRole
auth method; per application role a policy that can read only that role's
credentials, and an AppRole bound to it alone.

Split layout: the platform stack makes the auth method and one templated policy
(each AppRole's token reads the credentials of the role of its own name); an
application stack makes only its AppRoles, in the platform's method, with that policy."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import pulumi
import pulumi_vault as vault
from pulumi import Input, Output, ResourceOptions

from components.app_role import AppRole
from components.pg_endpoint import this_stack_mark
from providers.vault import PlatformInUse, VaultLeaseRevoker


@dataclass(frozen=True)
class AppIdentitiesArgs:
    vault_provider: vault.Provider
    """The explicit provider every Vault resource uses."""
    auth_path: str
    """Where the AppRole auth method is mounted (`auth/<path>`)."""
    mount_path: Input[str]
    """The database secrets engine the roles' credentials come from."""
    roles: tuple[AppRole, ...]
    platform_auth_path: Input[str] | None = None
    """An application stack's: the platform stack's AppRole auth method (equal to
    `auth_path`), which its roles go into and which it never makes or removes."""
    platform_policy: Input[str] | None = None
    """An application stack's: the platform's one policy for every application
    role (`applications_policy`), instead of a policy per role."""
    applications_policy: bool = False
    """A platform stack's: make that policy, which lets an AppRole's token read the
    credentials of the role of its own name, and nothing else; and refuse to be
    destroyed while application stacks still use the mount."""
    vault_address: str = ""
    """Vault API address, for that refusal and the lease revokers (a dynamic resource
    cannot use the provider)."""
    vault_id: Input[str] | None = None
    """The Vault's identity (`VaultDatabaseSecrets.vault_id`): with it, each role's
    leases are revoked before its AppRole goes (see below)."""
    setting_prefix: str = "pgcreds:"
    """What a setting's name follows in a message: the config namespace, or a package component's name and a dot."""


class AuthPathTaken(pulumi.RunError):
    """The auth path holds another kind of auth method (reported without a traceback)."""


def checked_auth_path(auth_json: str, path: str, setting_prefix: str) -> str:
    """`path`, once Vault's auth table shows it free or holding AppRole."""
    existing = json.loads(auth_json or "{}").get(path + "/")
    if existing is not None and existing.get("type") != "approle":
        raise AuthPathTaken(
            f"Vault already has a {existing.get('type')!r} auth method at 'auth/{path}': choose another "
            f"{setting_prefix}vaultAppRolePath (nothing was changed)"
        )
    return path


def creds_policy(mount_path: str, role: str) -> str:
    """Read one role's credentials, nothing else: Vault denies what no rule allows.
    Renewing the token and its leases comes with Vault's `default` policy."""
    return (
        f"# pg-dynamic-creds: what an application of the role {role!r} may do.\n"
        f'path "{mount_path}/creds/{role}" {{\n  capabilities = ["read"]\n}}\n'
    )


def applications_policy(mount_path: str, auth_accessor: str) -> str:
    """One policy for every application stack's roles: an AppRole login's entity
    alias carries its role's name, and the token reads the credentials of the
    Vault role of that name alone. An application stack's deploy token may then
    be kept from writing policies at all (vault-policies/application.hcl)."""
    role = f"{{{{identity.entity.aliases.{auth_accessor}.metadata.role_name}}}}"
    return (
        "# pg-dynamic-creds: what an application role's token may do (the role of its own name).\n"
        f'path "{mount_path}/creds/{role}" {{\n  capabilities = ["read"]\n}}\n'
    )


def policy_name(mount_path: str, role: str) -> str:
    """Unique per mount, so two stacks on one Vault never share a policy."""
    return f"pgcreds-{mount_path.replace('/', '-')}-{role}"


class AppIdentities(pulumi.ComponentResource):
    login_paths: dict[str, Output[dict]]
    """Per role: where its role-id, secret-ids and login are (never a secret-id itself)."""
    auth_path: Output[str]
    """The AppRole auth method's path."""

    def __init__(self, name: str, args: AppIdentitiesArgs, opts: ResourceOptions | None = None):
        super().__init__("pgcreds:vault:AppIdentities", name, None, opts)
        in_vault = ResourceOptions(parent=self, provider=args.vault_provider)
        self.applications_policy: Output[str] | None = None
        if args.platform_auth_path is not None:
            auth_path = Output.from_input(args.platform_auth_path)
        else:
            auth_table = vault.generic.get_secret_output(
                path="sys/auth", opts=pulumi.InvokeOutputOptions(provider=args.vault_provider, parent=self)
            )
            auth = vault.AuthBackend(
                f"{name}-approle",
                type="approle",
                description=f"Applications ({this_stack_mark()})",
                path=auth_table.data_json.apply(
                    lambda table: checked_auth_path(table, args.auth_path, args.setting_prefix)
                ),
                opts=ResourceOptions.merge(in_vault, ResourceOptions(replace_on_changes=["path"])),
            )
            auth_path = auth.path
            if args.applications_policy:
                mount = Output.from_input(args.mount_path)
                policy = vault.Policy(
                    f"{name}-applications",
                    name=mount.apply(lambda path: policy_name(path, "applications")),
                    policy=Output.all(mount, auth.accessor).apply(lambda parts: applications_policy(*parts)),
                    opts=in_vault,
                )
                self.applications_policy = policy.name
                # Deleted first (it depends on the mount, the auth method and the policy), so a
                # refused destroy leaves the platform whole.
                PlatformInUse(
                    f"{name}-in-use",
                    address=args.vault_address,
                    mount=mount,
                    opts=ResourceOptions(parent=self, depends_on=[auth, policy]),
                )
        self.auth_path = auth_path

        self.login_paths = {}
        for role in args.roles:
            policy_name_of_role: Input[str]
            if args.platform_policy is not None:
                policy_name_of_role = args.platform_policy
            else:
                policy_name_of_role = vault.Policy(
                    f"{name}-policy-{role.name}",
                    name=Output.from_input(args.mount_path).apply(functools.partial(policy_name, role=role.name)),
                    policy=Output.from_input(args.mount_path).apply(functools.partial(creds_policy, role=role.name)),
                    opts=in_vault,
                ).name
            # The token lives as long as a credential would: its leases are revoked with it.
            app_role = vault.approle.AuthBackendRole(
                f"{name}-{role.name}",
                backend=auth_path,
                role_name=role.name,
                token_policies=[policy_name_of_role],
                token_type="service",
                token_ttl=role.default_ttl_seconds,
                token_max_ttl=role.max_ttl_seconds,
                secret_id_ttl=role.secret_id_ttl_seconds,
                secret_id_num_uses=role.secret_id_uses,
                opts=ResourceOptions.merge(in_vault, ResourceOptions(replace_on_changes=["roleName", "backend"])),
            )
            if args.vault_id is not None:
                # Deleted before the AppRole and its auth method: disabling those revokes
                # their tokens and so every lease, one by one inside the provider's one
                # request (measured: 5,000 live leases outlast its 60 s). Revoked here
                # first, Vault revokes them in the background while this waits.
                VaultLeaseRevoker(
                    f"{name}-leases-{role.name}",
                    address=args.vault_address,
                    vault_id=args.vault_id,
                    mount=args.mount_path,
                    role=role.name,
                    connection="",
                    opts=ResourceOptions(parent=self, depends_on=[app_role]),
                )
            self.login_paths[role.name] = Output.all(auth_path, app_role.role_name, policy_name_of_role).apply(
                lambda parts: {
                    "roleIdPath": f"auth/{parts[0]}/role/{parts[1]}/role-id",
                    "secretIdPath": f"auth/{parts[0]}/role/{parts[1]}/secret-id",
                    "loginPath": f"auth/{parts[0]}/login",
                    "policy": parts[2],
                }
            )
        self.register_outputs({"login_paths": self.login_paths})
