"""One program per guardrail case, chosen by the `case` setting. It declares the
provider resources the project uses directly (bypassing settings.py, which
would refuse most of these) so that only the policy pack stands in the way.
Previews only: nothing here is ever deployed, and no server is contacted."""

import pulumi
import pulumi_aiven as aiven_provider
import pulumi_postgresql as postgresql
import pulumi_vault as vault

from components.vault_database_secrets import REVOCATION_STATEMENTS

case = pulumi.Config().require("case")
GOOD_URL = "postgresql://{{username}}:{{password}}@db.internal:5432/app?sslmode=require"
# A preview of new resources needs no server: no child token, no version check.
VAULT = vault.Provider(
    "vault", address="http://127.0.0.1:1", token="preview-only", skip_child_token=True, skip_get_vault_version=True
)


def role(max_ttl=86400, default_ttl=3600, creation="VALID UNTIL '{{expiration}}' "):
    vault.database.SecretBackendRole(
        "role",
        backend="database",
        name="metrics-readwrite",
        db_name="postgresql",
        creation_statements=[
            f"CREATE ROLE \"{{{{name}}}}\" WITH LOGIN PASSWORD '{{{{password}}}}' "
            f'{creation}IN ROLE "metrics_readwrite";'
        ],
        revocation_statements=REVOCATION_STATEMENTS,
        default_ttl=default_ttl,
        max_ttl=max_ttl,
        opts=pulumi.ResourceOptions(provider=VAULT),
    )


def connection(url=GOOD_URL):
    vault.database.SecretBackendConnection(
        "connection",
        backend="database",
        name="postgresql",
        allowed_roles=["metrics-readwrite"],
        postgresql=vault.database.SecretBackendConnectionPostgresqlArgs(
            connection_url=url, username="vault_admin", password=pulumi.Output.secret("x")
        ),
        opts=pulumi.ResourceOptions(provider=VAULT),
    )


def grant(objects=("weekly_metrics_reporting",), sslmode="require"):
    server = postgresql.Provider(
        "postgres",
        host="db.internal",
        port=5432,
        database="app",
        username="admin",
        password=pulumi.Output.secret("x"),
        sslmode=sslmode,
        superuser=False,
    )
    postgresql.Grant(
        "grant",
        database="app",
        role="metrics_readwrite",
        schema="public",
        object_type="table",
        objects=list(objects),
        privileges=["SELECT"],
        opts=pulumi.ResourceOptions(provider=server),
    )


def aiven(termination_protection=True):
    aiven_provider.Pg(
        "service",
        project="p",
        cloud_name="google-europe-west1",
        plan="startup-4",
        service_name="pg-metrics",
        termination_protection=termination_protection,
        opts=pulumi.ResourceOptions(provider=aiven_provider.Provider("aiven", api_token="preview-only")),
    )


if case == "compliant":
    role(), connection(), grant(), aiven()
elif case == "max-ttl-48h":
    role(max_ttl=48 * 3600)
elif case == "default-above-max":
    role(max_ttl=3600, default_ttl=7200)
elif case == "no-valid-until":
    role(creation="")
elif case == "password-in-url":
    connection("postgresql://vault_admin:hunter2@db.internal:5432/app?sslmode=require")
elif case == "grant-on-sensitive-table":
    grant(objects=("weekly_metrics_reporting", "employee_salary"))
elif case == "grant-on-every-table":
    grant(objects=())
elif case == "sslmode-disable-in-url":
    connection(GOOD_URL.replace("require", "disable"))
elif case == "sslmode-disable-in-connection":
    grant(sslmode="disable")
elif case == "aiven-without-termination-protection":
    aiven(termination_protection=False)
else:
    raise ValueError(f"unknown case {case!r}")
