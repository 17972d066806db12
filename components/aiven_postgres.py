"""AivenPostgres: an Aiven for PostgreSQL service (`aiven.Pg`), as a PgEndpoint.

Pulumi's own connections verify the server against the Aiven project's CA
(sslmode=verify-full with the CA from `aiven.get_project`), and so does Vault's:
HashiCorp Vault takes that CA in the connection (`tls_ca`); OpenBao only as a file
on its own host, named by pgcreds:vaultSslRootCert (without it, on dev alone, Vault
connects with sslmode=require).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import pulumi
from pulumi import Output, ResourceOptions

from components.pg_endpoint import PgEndpoint, PgLogin, admin_provider, register_endpoint_outputs
from providers.aiven import TerminationGuard


@dataclass(frozen=True)
class AivenPostgresArgs:
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
    maintenance: dict[str, str] | None = None
    """{"dow": "sunday", "time": "04:00:00"}, or None for Aiven's choice."""
    sslmode: str = "verify-full"
    """sslmode of Pulumi's connections; verify-full checks the server against the project CA."""
    vault_sslrootcert: str | None = None
    """The project CA's path on Vault's host, for a Vault that reads it only from a file (OpenBao)."""
    vault_connections: str = ""
    """Vault's connections to the service (`<mount>/config/<name>`), for messages."""
    deploy_login: str | None = None
    """The login the program deploys as once `make bootstrap --aiven-stack` handed the
    service over (the deploy session's PGUSER and PGPASSFILE); None: the service's
    admin, whose password is a secret output of the service (a first-day stack)."""


class ServerNotVerified(pulumi.RunError):
    """The service's certificate fails verify-full against the project's CA (no traceback)."""


def verified_host(host: str, port: int, ca_pem: str, args: AivenPostgresArgs) -> str:
    """The service's host, once its certificate passes verify-full against the
    project's CA for that host name: the check Pulumi's connections and Vault's make.
    Everything on the server waits for it, so a failure changes nothing there, and
    names the connection and the CA where Vault's own refusal (`x509: …`) would not."""
    from clients.tls import server_certificate_problem

    problem = server_certificate_problem(host, int(port), ca_pem) if args.sslmode == "verify-full" else ""
    if problem:
        vault = f"Vault's connection {args.vault_connections}" if args.vault_connections else "Vault's connection"
        raise ServerNotVerified(
            f"the Aiven service {args.service_name!r} at {host}:{port} presents a certificate that verify-full "
            f"refuses against the CA of the Aiven project {args.project!r} (aiven.get_project ca_cert"
            f"{'; on Vault: ' + args.vault_sslrootcert if args.vault_sslrootcert else ''}): {problem.rstrip('.')}. "
            f"{vault} and Pulumi's own connections verify the service with it and would be refused. "
            "Nothing on the server was changed."
        )
    return host


class UnknownPlan(pulumi.RunError):
    """The project offers no such plan (reported without a traceback)."""


def checked_plan(plans: list, plan: str, project: str) -> str:
    """`plan`, once the project's plan list (for PostgreSQL) holds it; otherwise
    the preview stops here, before the service is created or changed."""
    offered = sorted(p.service_plan for p in plans or [])
    if plan not in offered:
        raise UnknownPlan(
            f"pgcreds:aivenPlan: {plan!r} is not a PostgreSQL plan of the Aiven project {project!r}; "
            f"choose one of {', '.join(offered) or '(none offered)'} (nothing was changed)"
        )
    return plan


class AivenPostgres(pulumi.ComponentResource):
    endpoint: PgEndpoint
    service: Any
    """The `aiven.Pg` service (pulumi_aiven is imported only in aiven mode: see __init__)."""
    args: AivenPostgresArgs

    def __init__(self, name: str, args: AivenPostgresArgs, opts: ResourceOptions | None = None):
        # Imported here, not at the top: pulumi_aiven loads every Aiven resource type
        # (about half a second, and as much again at exit), and only aiven mode needs it.
        import pulumi_aiven as aiven

        super().__init__("pgcreds:postgres:AivenPostgres", name, None, opts)
        self.name, self.args = name, args
        # The API token is never an input: the provider reads AIVEN_TOKEN, the run's
        # short-lived token that the deploy session minted, so no state records it.
        provider = aiven.Provider(f"{name}-aiven", opts=ResourceOptions(parent=self))
        ask_aiven = pulumi.InvokeOutputOptions(provider=provider, parent=self)
        project = aiven.get_project_output(project=args.project, opts=ask_aiven)
        plans = aiven.get_service_plan_list_output(project=args.project, service_type="pg", opts=ask_aiven)
        maintenance = args.maintenance or {}
        self.service = aiven.Pg(
            f"{name}-service",
            project=args.project,
            cloud_name=args.cloud,
            plan=plans.service_plans.apply(lambda offered: checked_plan(offered, args.plan, args.project)),
            service_name=args.service_name,
            termination_protection=args.termination_protection,
            maintenance_window_dow=maintenance.get("dow"),
            maintenance_window_time=maintenance.get("time"),
            pg_user_config=aiven.PgPgUserConfigArgs(pg_version=args.pg_version),
            opts=ResourceOptions(parent=self, provider=provider),
        )
        login = PgLogin(
            host=Output.all(self.service.service_host, self.service.service_port, project.ca_cert).apply(
                lambda parts: verified_host(parts[0], parts[1], parts[2], args)
            ),
            port=self.service.service_port,
            database=self.service.pg.apply(lambda pg: cast(str, pg.dbname)),
            admin_user=args.deploy_login or self.service.service_username,
            admin_password=None if args.deploy_login else Output.secret(self.service.service_password),
            sslmode=args.sslmode,
            sslrootcert_pem=project.ca_cert,
        )
        self.endpoint = PgEndpoint.of(
            login,
            admin_provider(f"{name}-admin", login, parent=self),
            # (a Vault that takes the CA in the connection verifies anyway: `ca_in_connection`)
            vault_sslmode="require"
            if args.sslmode in ("verify-ca", "verify-full") and not args.vault_sslrootcert
            else None,
            vault_sslrootcert=args.vault_sslrootcert,
        )
        register_endpoint_outputs(self, self.endpoint)

    def guard_destroy(self, dependents: Sequence[pulumi.Resource]) -> None:
        """While termination protection is on, `pulumi destroy` stops before it
        deletes any of `dependents` (everything built on this service): a guard
        that depends on them all is deleted first, and refuses."""
        TerminationGuard(
            f"{self.name}-termination-guard",
            service_name=self.args.service_name,
            protected=self.args.termination_protection,
            opts=ResourceOptions(parent=self, depends_on=[self.service, *dependents]),
        )
