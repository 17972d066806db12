"""PlatformReference: what an application stack takes from its platform stack
(a `StackReference`): the PostgreSQL server, as a PgEndpoint with this stack's
own provider, and the Vault mounts its connection and identities go into.

Read at preview and checked there: a platform stack of another kind, or a mount
path other than the one this stack's settings (and so its deploy policy) name,
stops the preview before anything changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi import Output, ResourceOptions

from clients.tls import ca_file
from components.pg_endpoint import PgEndpoint, PgLogin, admin_provider, register_endpoint_outputs


@dataclass(frozen=True)
class PlatformReferenceArgs:
    stack: str
    """The platform stack: `<stack>` (this project and backend) or `<organization>/<project>/<stack>`."""
    admin_user: str
    """The login this stack's deployer uses on the platform's server (its password from PGPASSFILE)."""
    sslmode: str
    """libpq sslmode of this stack's connections."""
    sslrootcert: str | None
    """CA certificate file for verify-ca / verify-full, on this machine."""
    mount_path: str
    """The database secrets engine this stack's settings name: must be the platform's."""
    approle_path: str
    """The AppRole auth method this stack's settings name: must be the platform's."""
    check_login: Callable[[str, int, str, str, str, str | None], None]
    """Tries the admin login once (host, port, database, user, sslmode, sslrootcert), raising if refused."""


class PlatformMismatch(pulumi.RunError):
    """The platform stack is not what this stack's settings expect (reported without a traceback)."""


def full_stack_name(name: str) -> str:
    """A bare stack name is one of this project, in this organisation (`organization` on a DIY backend)."""
    return name if "/" in name else f"{pulumi.get_organization()}/{pulumi.get_project()}/{name}"


def checked(outputs: dict[str, Any], args: PlatformReferenceArgs, stack: str) -> dict[str, Any]:
    """The platform's outputs, once they are a platform's and match this stack's settings."""
    kind = outputs.get("stackKind")
    if kind != "platform":
        raise PlatformMismatch(
            f"pgcreds:platformStack names {stack!r}, which is not a platform stack (its pgcreds:stackKind is "
            f"{kind or 'all'!r}, or it was never deployed): name the stack that runs with "
            "pgcreds:stackKind platform, and `pulumi up` it first. Nothing was changed."
        )
    # The platform exports each path under the name of the setting that chose it.
    for setting, wanted in (("vaultMountPath", args.mount_path), ("vaultAppRolePath", args.approle_path)):
        if outputs.get(setting) != wanted:
            raise PlatformMismatch(
                f"pgcreds:{setting} is {wanted!r}, but the platform stack {stack!r} has it at {outputs.get(setting)!r}: "
                f"set pgcreds:{setting} to {outputs.get(setting)!r} (and write this application's deploy policy for "
                "it). Nothing was changed."
            )
    postgres = outputs["postgres"]
    # A managed service's CA comes with its outputs (an Aiven platform); a server's is this stack's file.
    rootcert = ca_file(postgres["sslrootcert_pem"]) if postgres.get("sslrootcert_pem") else args.sslrootcert
    args.check_login(
        postgres["host"], int(postgres["port"]), postgres["database"], args.admin_user, args.sslmode, rootcert
    )
    return outputs


class PlatformReference(pulumi.ComponentResource):
    endpoint: PgEndpoint
    """The platform's server, reached with this stack's own provider and login."""
    mount_path: Output[str]
    """The platform's database secrets engine (equal to `args.mount_path`)."""
    approle_path: Output[str]
    """The platform's AppRole auth method (equal to `args.approle_path`)."""
    vault_id: Output[str]
    """The platform Vault's identity, which the lease revokers pin."""
    applications_policy: Output[str]
    """The platform's policy that every application role's AppRole is given."""

    def __init__(self, name: str, args: PlatformReferenceArgs, opts: ResourceOptions | None = None):
        super().__init__("pgcreds:platform:PlatformReference", name, None, opts)
        stack = full_stack_name(args.stack)
        reference = pulumi.StackReference(f"{name}-stack", stack_name=stack, opts=ResourceOptions(parent=self))
        outputs = Output.all(
            **{
                key: reference.get_output(key)
                for key in (
                    "stackKind",
                    "postgres",
                    "vaultMountPath",
                    "vaultAppRolePath",
                    "vaultId",
                    "vaultApplicationsPolicy",
                )
            }
        ).apply(lambda values: checked(values, args, stack))
        postgres = outputs["postgres"]
        login = PgLogin(
            host=postgres["host"],
            port=postgres["port"].apply(int),
            database=postgres["database"],
            admin_user=args.admin_user,
            admin_password=None,
            sslmode=args.sslmode,
            sslrootcert=args.sslrootcert,
            # (a key the platform left empty is not in its outputs at all)
            sslrootcert_pem=postgres.apply(lambda values: values.get("sslrootcert_pem")),
        )
        self.endpoint = PgEndpoint.of(
            login,
            admin_provider(f"{name}-admin", login, parent=self),
            vault_sslmode=postgres.apply(lambda values: values.get("vaultSslmode")),
            vault_sslrootcert=postgres.apply(lambda values: values.get("vaultSslRootCert")),
        )
        self.mount_path = outputs["vaultMountPath"]
        self.approle_path = outputs["vaultAppRolePath"]
        self.vault_id = outputs["vaultId"]
        self.applications_policy = outputs["vaultApplicationsPolicy"]
        register_endpoint_outputs(self, self.endpoint)
