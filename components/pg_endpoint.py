"""PgEndpoint: where PostgreSQL is, how to log in as its admin, and the one
explicit `postgresql.Provider` that logs in there.

The schema, access and Vault components accept one of these and never know
whether it came from an existing server or a managed service.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pulumi
import pulumi_postgresql as postgresql
from pulumi import Input, Output, ResourceOptions

from clients.tls import ca_file
from providers._shared import stack_mark
from providers.postgres import PgRoleClaim, PgRoleMark

# The provider's default is 180 s: an unreachable server would stall `up` for minutes.
CONNECT_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class PgLogin:
    """Where a server is and how the program logs in there: what an endpoint component
    works out (from settings, a service or a platform's outputs) and hands to both
    `admin_provider` and `PgEndpoint.of`."""

    host: Input[str]
    port: Input[int]
    database: Input[str]
    admin_user: Input[str]
    admin_password: Output[str] | None
    """None: the deploy session's login (PGUSER, PGPASSFILE), recorded nowhere."""
    sslmode: str
    sslrootcert: str | None = None
    sslrootcert_pem: Input[str] | None = None


@dataclass(frozen=True)
class PgEndpoint:
    host: Input[str]
    """Host name or address, as seen from Pulumi and from Vault."""
    port: Input[int]
    """TCP port."""
    database: Input[str]
    """Database that holds the application's tables."""
    admin_user: Input[str]
    """A role that may create roles and tables (not necessarily a superuser). Where
    `admin_password` is None, the providers log in as the deploy session's PGUSER,
    which is this login to deploy and a read-only one to preview."""
    admin_password: Output[str] | None
    """The admin role's password, a secret Output; None where the deploy session's
    pgpass file (PGPASSFILE) holds it, so that no state records it."""
    provider: postgresql.Provider
    """The explicit provider every `pulumi_postgresql` resource on this endpoint uses."""
    sslmode: str = "prefer"
    """libpq sslmode for every connection (Pulumi's and Vault's)."""
    sslrootcert: str | None = None
    """Path of a CA certificate file to verify the server with (verify-ca / verify-full)."""
    sslrootcert_pem: Input[str] | None = None
    """The CA certificate itself, as PEM text (a managed service's CA); used instead of `sslrootcert`."""
    vault_sslmode: Input[str] | None = None
    """sslmode of Vault's own connection, when it must differ (an OpenBao without the CA as a file)."""
    vault_sslrootcert: Input[str] | None = None
    """The CA file's path on Vault's host (pgcreds:vaultSslRootCert), for a Vault that
    takes the CA only in the URL (OpenBao); default: `sslrootcert`'s path."""
    setting_prefix: str = "pgcreds:"
    """What the name of a setting follows in a message (`claim`'s `setting`): the stack
    config's namespace, or a package component's name and a dot."""

    @classmethod
    def of(
        cls,
        login: PgLogin,
        provider: postgresql.Provider,
        vault_sslmode: Input[str] | None = None,
        vault_sslrootcert: Input[str] | None = None,
    ) -> PgEndpoint:
        """The endpoint of a login, with its provider (`admin_provider`) and Vault's own TLS."""
        return cls(
            host=login.host,
            port=login.port,
            database=login.database,
            admin_user=login.admin_user,
            admin_password=login.admin_password,
            provider=provider,
            sslmode=login.sslmode,
            sslrootcert=login.sslrootcert,
            sslrootcert_pem=login.sslrootcert_pem,
            vault_sslmode=vault_sslmode,
            vault_sslrootcert=vault_sslrootcert,
        )

    def resource_options(self, parent: pulumi.Resource) -> ResourceOptions:
        """Options for every `pulumi_postgresql` resource on this endpoint. A move to
        another server (or database) replaces the object, made on the new one and
        dropped from the old one: the engine alone would call it an update of the
        provider and leave the old object behind. Delete first, since names are
        global to a server and a "new" server may be the old one by another name."""
        return ResourceOptions(
            parent=parent,
            provider=self.provider,
            delete_before_replace=True,
            replacement_trigger=Output.format("{0}:{1}/{2}", self.host, self.port, self.database),
        )

    def claim(self, resource_name: str, *, parent: pulumi.Resource, name: str, setting: str) -> PgRoleClaim:
        """This stack's claim on a role name (checked at preview): what must not
        happen before the claim holds (a role, its password) depends on it."""
        return PgRoleClaim(
            f"{resource_name}-claim",
            name=name,
            setting=f"{self.setting_prefix}{setting}",
            mark=this_stack_mark(),
            connection=self.admin_connection(),
            opts=ResourceOptions(parent=parent),
        )

    def claimed_role(
        self,
        resource_name: str,
        *,
        parent: pulumi.Resource,
        name: str,
        setting: str,
        opts: ResourceOptions | None = None,
        claim: PgRoleClaim | None = None,
        **role_args,
    ) -> postgresql.Role:
        """A `postgresql.Role` on this endpoint, made after a claim on its name
        (`PgRoleClaim`, checked at preview): never a role this stack did not create.
        `setting` names the stack setting that chose the name, for the error; pass
        `claim` if it was made beforehand. The component then marks its roles (`mark`)."""
        claim = claim or self.claim(resource_name, parent=parent, name=name, setting=setting)
        return postgresql.Role(
            resource_name,
            name=name,
            **role_args,
            opts=ResourceOptions.merge(
                ResourceOptions.merge(self.resource_options(parent), opts), ResourceOptions(depends_on=[claim])
            ),
        )

    def mark(self, resource_name: str, *, parent: pulumi.Resource, roles: list[postgresql.Role]) -> None:
        """The stack's mark on the roles a component made (`claimed_role`), in their
        comments: one resource for them all, made once they exist."""
        if roles:
            PgRoleMark(
                f"{resource_name}-marks",
                names=Output.all(*[role.name for role in roles]).apply(sorted),
                mark=this_stack_mark(),
                connection=self.admin_connection(),
                opts=ResourceOptions(parent=parent, depends_on=roles),
            )

    def admin_connection(self, schema: str = "public") -> Output[dict]:
        """The `connection` input of the table and row dynamic resources (a secret):
        a dynamic provider cannot use `provider`. Another `schema` than `public` is
        its sessions' search_path (an application stack's own schema)."""
        # With no password here, the login is the session's (PGUSER), recorded nowhere:
        # a preview's refresh then reads as the preview login, not as the deployer.
        login = dict(user=self.admin_user, password=self.admin_password) if self.admin_password is not None else {}
        login |= {"search_path": schema} if schema != "public" else {}
        return Output.secret(
            Output.all(
                host=self.host,
                port=self.port,
                database=self.database,
                sslrootcert_pem=self.sslrootcert_pem,
                **login,
            ).apply(lambda c: {**c, "sslmode": self.sslmode, "sslrootcert": self.sslrootcert})
        )

    def vault_connection_url(self, ca_in_connection: bool = False) -> Output[str]:
        """A connection URL for Vault that carries no credentials: Vault fills in
        {{username}} and {{password}} from the connection's own fields. With
        `ca_in_connection` the CA goes in the connection's `tls_ca` (`vault_tls_ca`),
        so the URL keeps the endpoint's sslmode and names no file; otherwise a CA
        file path, when given, must exist on the Vault server too."""

        def url(host: str, port: int, database: str, vault_sslmode: str | None, vault_ca: str | None) -> str:
            if ca_in_connection:
                vault_sslmode = None
            ca_path = vault_ca or self.sslrootcert
            ca = f"&sslrootcert={ca_path}" if ca_path and not vault_sslmode and not ca_in_connection else ""
            return (
                f"postgresql://{{{{username}}}}:{{{{password}}}}@{host}:{port}/{database}"
                f"?sslmode={vault_sslmode or self.sslmode}{ca}"
            )

        return Output.all(self.host, self.port, self.database, self.vault_sslmode, self.vault_sslrootcert).apply(
            lambda parts: url(*parts)
        )

    def vault_verifies(self, ca_in_connection: bool) -> Output[bool]:
        """Whether Vault's connection verifies the server's certificate (verify-ca/-full)."""
        if ca_in_connection:
            return Output.from_input(self.sslmode in ("verify-ca", "verify-full"))
        return Output.from_input(self.vault_sslmode).apply(
            lambda mode: (mode or self.sslmode) in ("verify-ca", "verify-full")
        )

    def vault_tls_ca(self) -> Output[str] | None:
        """The CA that signed the server's certificate, as PEM text, for a Vault that
        takes it in the connection (`tls_ca`); None where the endpoint verifies nothing."""
        if self.sslmode not in ("verify-ca", "verify-full"):
            return None
        from_file: str | None = None
        if self.sslrootcert:
            with open(self.sslrootcert, encoding="utf-8") as pem:
                from_file = pem.read()
        if self.sslrootcert_pem is not None:
            # An application stack's comes from its platform's outputs, which hold a PEM
            # for a managed service only: for a server, this stack's own file.
            return Output.from_input(self.sslrootcert_pem).apply(lambda pem: pem or from_file or "")
        return Output.from_input(from_file) if from_file is not None else None


def this_stack_mark() -> str:
    """The running stack's mark, which its roles carry as their comment."""
    return stack_mark(pulumi.get_project(), pulumi.get_stack())


def admin_provider(name: str, login: PgLogin, parent: pulumi.Resource | None = None) -> postgresql.Provider:
    """The `postgresql.Provider` for an endpoint. `superuser=False`: the admin
    need not be a superuser (Aiven's avnadmin is not), and the provider then
    takes role membership where it needs it, which also works for a superuser."""
    rootcert: Input[str] | None = login.sslrootcert
    if login.sslrootcert_pem is not None:  # (an application stack's platform may give none: then `sslrootcert`)
        path = login.sslrootcert
        rootcert = cast(
            "Output[str]", Output.from_input(login.sslrootcert_pem).apply(lambda pem: ca_file(pem) if pem else path)
        )
    # Without a password the provider logs in as PGUSER (its default), which the
    # state then does not record: a refresh, which configures providers from the
    # state, and a preview both log in as the session's own login.
    credentials: dict[str, Any] = (
        {"username": login.admin_user, "password": Output.secret(login.admin_password)}
        if login.admin_password is not None
        else {}
    )
    return postgresql.Provider(
        name,
        host=login.host,
        port=login.port,
        database=login.database,
        sslmode=login.sslmode,
        sslrootcert=rootcert,
        superuser=False,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        **credentials,
        opts=ResourceOptions(parent=parent),
    )


def register_endpoint_outputs(resource: pulumi.ComponentResource, endpoint: PgEndpoint) -> None:
    """The outputs every endpoint component registers (no password among them)."""
    resource.register_outputs({"host": endpoint.host, "port": endpoint.port, "database": endpoint.database})
