"""One program per guardrail case, chosen by the `case` setting. It uses the
project's own resource classes directly (bypassing settings.py, which would
refuse most of these) so that only the policy pack stands in the way.
Previews only: nothing here is ever deployed."""

import pulumi

from components.vault_database_secrets import REVOCATION_STATEMENTS
from providers.aiven import AivenPg
from providers.postgres import PgTableGrant
from providers.vault import VaultDatabaseConnection, VaultDatabaseRole

case = pulumi.Config().require("case")
VAULT = "http://127.0.0.1:8200"
GOOD_URL = "postgresql://{{username}}:{{password}}@db.internal:5432/app?sslmode=require"
PG = {"host": "db.internal", "port": 5432, "database": "app", "user": "admin", "password": "x",
      "sslmode": "require", "sslrootcert": None}


def role(max_ttl=86400, default_ttl=3600, creation="VALID UNTIL '{{expiration}}' "):
    VaultDatabaseRole(
        "role", address=VAULT, mount="database", name="metrics-readwrite", db_name="postgresql",
        creation_statements=[f'CREATE ROLE "{{{{name}}}}" WITH LOGIN PASSWORD \'{{{{password}}}}\' '
                             f'{creation}IN ROLE "metrics_readwrite";'],
        revocation_statements=REVOCATION_STATEMENTS, default_ttl=default_ttl, max_ttl=max_ttl)


def connection(url=GOOD_URL):
    VaultDatabaseConnection("connection", address=VAULT, mount="database", name="postgresql", connection_url=url,
                            username="vault_admin", password=pulumi.Output.secret("x"),
                            allowed_roles=["metrics-readwrite"])


def grant(table="weekly_metrics_reporting", sslmode="require"):
    PgTableGrant("grant", role="metrics_readwrite", table=table, privileges=["SELECT"], sequence_privileges=[],
                 connection=pulumi.Output.secret({**PG, "sslmode": sslmode}))


def aiven(termination_protection=True):
    AivenPg("service", api_url="https://api.aiven.io", project="p", cloud="google-europe-west1", plan="startup-4",
            service_name="pg-metrics", pg_version="16", termination_protection=termination_protection)


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
    grant(table="employee_salary")
elif case == "sslmode-disable-in-url":
    connection(GOOD_URL.replace("require", "disable"))
elif case == "sslmode-disable-in-connection":
    grant(sslmode="disable")
elif case == "aiven-without-termination-protection":
    aiven(termination_protection=False)
else:
    raise ValueError(f"unknown case {case!r}")
