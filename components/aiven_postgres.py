"""AivenPostgres: an Aiven for PostgreSQL service, as a PgEndpoint.

Pulumi's own connections verify the server against the Aiven project's CA
(sslmode=verify-full with the CA from the API). Vault's connection uses
sslmode=require: encrypted, but Vault's PostgreSQL plugin in the open-source
API takes a CA only as a file on the Vault server, which this program cannot
place there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
from pulumi import Input, Output, ResourceOptions

from components.pg_endpoint import PgEndpoint, admin_provider, register_endpoint_outputs
from providers.aiven import AivenPg


@dataclass(frozen=True)
class AivenPostgresArgs:
    api_url: str
    """Aiven API base URL (https://api.aiven.io)."""
    project: str
    """Aiven project that owns the service."""
    cloud: str
    """Aiven cloud, e.g. google-europe-west1."""
    plan: str
    """Service plan, e.g. startup-4."""
    service_name: str
    """Service name (unique in the project)."""
    pg_version: str
    """PostgreSQL major version, e.g. "16"."""
    termination_protection: bool
    """Refuse to delete the service (on by default outside dev)."""
    maintenance: Optional[dict[str, str]] = None
    """{"dow": "sunday", "time": "04:00:00"}, or None for Aiven's choice."""
    token: Optional[Input[str]] = None
    """API token as a secret; None reads AIVEN_TOKEN in the provider process."""
    sslmode: str = "verify-full"
    """sslmode of Pulumi's connections; verify-full checks the server against the project CA."""


class AivenPostgres(pulumi.ComponentResource):
    endpoint: PgEndpoint

    def __init__(self, name: str, args: AivenPostgresArgs, opts: Optional[ResourceOptions] = None):
        super().__init__("pgcreds:postgres:AivenPostgres", name, None, opts)
        service = AivenPg(
            f"{name}-service", api_url=args.api_url, project=args.project, cloud=args.cloud, plan=args.plan,
            service_name=args.service_name, pg_version=args.pg_version,
            termination_protection=args.termination_protection, maintenance=args.maintenance,
            token=Output.secret(args.token) if args.token is not None else None,
            opts=ResourceOptions(parent=self))
        login = dict(host=service.host, port=service.port, database=service.database, admin_user=service.admin_user,
                     admin_password=Output.secret(service.admin_password), sslmode=args.sslmode,
                     sslrootcert_pem=service.ca_certificate)
        self.endpoint = PgEndpoint(
            **login, provider=admin_provider(f"{name}-admin", **login, parent=self),
            vault_sslmode="require" if args.sslmode in ("require", "verify-ca", "verify-full") else args.sslmode)
        register_endpoint_outputs(self, self.endpoint)
