"""ExistingPostgres: a PostgreSQL server that already runs (local, or anywhere)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi import ResourceOptions

from components.pg_endpoint import PgEndpoint, PgLogin, admin_provider, register_endpoint_outputs


@dataclass(frozen=True)
class ExistingPostgresArgs:
    host: str
    """Host name or address of the server."""
    port: int
    """TCP port of the server."""
    database: str
    """Database that holds the application's tables."""
    admin_user: str
    """A role with CREATEROLE that can create tables in the database. Its password
    is no input: every driver reads it from the deploy session's PGPASSFILE."""
    sslmode: str = "prefer"
    """libpq sslmode."""
    sslrootcert: str | None = None
    """CA certificate file for verify-ca / verify-full."""
    vault_sslrootcert: str | None = None
    """The CA file's path on Vault's host, where it differs from `sslrootcert` (OpenBao)."""


class ExistingPostgres(pulumi.ComponentResource):
    """Creates no server: it turns settings into the PgEndpoint (and its
    provider) that the rest consumes."""

    endpoint: PgEndpoint

    def __init__(self, name: str, args: ExistingPostgresArgs, opts: ResourceOptions | None = None):
        super().__init__("pgcreds:postgres:ExistingPostgres", name, None, opts)
        login = PgLogin(
            host=args.host,
            port=args.port,
            database=args.database,
            admin_user=args.admin_user,
            admin_password=None,
            sslmode=args.sslmode,
            sslrootcert=args.sslrootcert,
        )
        self.endpoint = PgEndpoint.of(
            login, admin_provider(f"{name}-admin", login, parent=self), vault_sslrootcert=args.vault_sslrootcert
        )
        register_endpoint_outputs(self, self.endpoint)
