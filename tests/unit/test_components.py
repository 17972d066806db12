"""Each component, built against Pulumi mocks: which resources it registers and with what inputs."""

from __future__ import annotations

import pulumi
import pytest
from pulumi import Output


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: dict[str, pulumi.runtime.MockResourceArgs] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources[args.name] = args
        outputs = dict(args.inputs)
        if "bytes" in outputs:  # RandomPassword
            outputs["result"] = "generated-password"
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


@pytest.fixture
def mocks():
    recording = RecordingMocks()
    pulumi.runtime.set_mocks(recording, preview=False)
    yield recording


from components.access_roles import AccessRoles, AccessRolesArgs  # noqa: E402
from components.app_role import AppRole  # noqa: E402
from components.app_schema import AppSchema, AppSchemaArgs  # noqa: E402
from components.existing_postgres import ExistingPostgres, ExistingPostgresArgs  # noqa: E402
from components.vault_database_secrets import (  # noqa: E402
    REVOCATION_STATEMENTS,
    VaultDatabaseSecrets,
    VaultDatabaseSecretsArgs,
)
from tables import APP_TABLES  # noqa: E402

METRICS = AppRole("metrics-readwrite", ("weekly_metrics_reporting",), "readwrite", 3600, 86400)
REPORTS = AppRole("reports-read", ("weekly_metrics_reporting",), "read", 600, 3600,
                  username_template="r-{{random 8}}{{ unix_time }} | truncate 63")


def endpoint():
    return ExistingPostgres("pg", ExistingPostgresArgs(
        host="db.internal", port=5432, database="app", admin_user="admin",
        admin_password=Output.secret("admin-secret"), sslmode="require")).endpoint


@pulumi.runtime.test
def test_existing_postgres_keeps_the_password_secret(mocks):
    pg = endpoint()

    def check(args):
        connection_is_secret, connection = args
        assert connection_is_secret and connection["password"] == "admin-secret"
        assert connection["sslmode"] == "require"
    return Output.all(pg.admin_connection().is_secret(), pg.admin_connection()).apply(check)


@pulumi.runtime.test
def test_vault_connection_url_carries_no_password(mocks):
    def check(url):
        assert url == "postgresql://{{username}}:{{password}}@db.internal:5432/app?sslmode=require"
        assert "admin-secret" not in url
    return endpoint().vault_connection_url().apply(check)


def test_app_schema_tables_owner_and_sample_rows_on_dev_only(mocks):
    @pulumi.runtime.test
    def program():
        AppSchema("dev", AppSchemaArgs(endpoint(), APP_TABLES, "app_owner", sample_data=True,
                                       keep_tables_on_destroy=False))
        AppSchema("prod", AppSchemaArgs(endpoint(), APP_TABLES, "app_owner_p", sample_data=False,
                                        keep_tables_on_destroy=True))
    program()
    names = set(mocks.resources)
    assert {"dev-owner", "dev-weekly_metrics_reporting", "dev-employee_salary",
            "dev-weekly_metrics_reporting-sample-rows", "dev-employee_salary-sample-rows"} <= names
    assert not any(n.startswith("prod-") and n.endswith("sample-rows") for n in names)
    table = mocks.resources["dev-weekly_metrics_reporting"].inputs
    assert table["owner"] == "app_owner" and table["keep_on_destroy"] is False
    assert ["id", "serial PRIMARY KEY"] in table["columns"]
    assert mocks.resources["prod-employee_salary"].inputs["keep_on_destroy"] is True
    assert mocks.resources["dev-owner"].inputs["login"] is False


def test_access_roles_groups_grants_and_vault_admin(mocks):
    exported = {}

    @pulumi.runtime.test
    def program():
        pg = endpoint()
        schema = AppSchema("s", AppSchemaArgs(pg, APP_TABLES, "app_owner", False, True))
        access = AccessRoles("a", AccessRolesArgs(pg, (METRICS, REPORTS), schema.tables, "vault_admin"))
        return Output.all(access.vault_admin_password.is_secret(), access.vault_admin_username).apply(
            lambda args: exported.update(secret=args[0], username=args[1]))
    program()
    assert exported == {"secret": True, "username": "vault_admin"}
    r = mocks.resources
    assert r["a-metrics_readwrite"].inputs["login"] is False
    readwrite = r["a-metrics_readwrite-weekly_metrics_reporting"].inputs
    assert readwrite["privileges"] == ["SELECT", "INSERT", "UPDATE", "DELETE"]
    assert readwrite["sequence_privileges"] == ["USAGE", "SELECT"]
    read = r["a-reports_read-weekly_metrics_reporting"].inputs
    assert read["privileges"] == ["SELECT"] and read["sequence_privileges"] == []
    # Nothing may reach the sensitive table.
    assert not any(a.inputs.get("table") == "employee_salary" for a in r.values())
    admin = r["a-vault-admin"].inputs
    assert admin["login"] is True and admin["create_role"] is True
    membership = r["a-metrics_readwrite-vault-admin"].inputs
    assert membership["admin_option"] is True and membership["group"] == "metrics_readwrite"


def test_vault_database_secrets_mount_connections_and_roles(mocks):
    @pulumi.runtime.test
    def program():
        VaultDatabaseSecrets("v", VaultDatabaseSecretsArgs(
            endpoint=endpoint(), vault_address="http://127.0.0.1:8200", mount_path="database",
            connection_name="postgresql", admin_username="vault_admin",
            admin_password=Output.secret("vault-admin-secret"), roles=(METRICS, REPORTS)))
    program()
    r = mocks.resources
    assert r["v-mount"].inputs["path"] == "database"
    shared = r["v-connection"].inputs
    assert shared["name"] == "postgresql" and shared["allowed_roles"] == ["metrics-readwrite"]
    assert shared["username"] == "vault_admin" and shared["username"] != "postgres"
    assert "vault-admin-secret" not in shared["connection_url"]
    assert "{{username}}:{{password}}" in shared["connection_url"]
    own = r["v-connection-reports-read"].inputs
    assert own["allowed_roles"] == ["reports-read"] and "truncate 63" in own["username_template"]
    role = r["v-role-metrics-readwrite"].inputs
    assert role["db_name"] == "postgresql" and role["default_ttl"] == 3600 and role["max_ttl"] == 86400
    (creation,) = role["creation_statements"]
    assert "VALID UNTIL '{{expiration}}'" in creation and 'IN ROLE "metrics_readwrite"' in creation
    assert role["revocation_statements"] == REVOCATION_STATEMENTS
    assert r["v-role-reports-read"].inputs["db_name"] == "postgresql-reports-read"


def test_revocation_ends_sessions_reassigns_and_drops():
    (statement,) = REVOCATION_STATEMENTS
    for step in ("pg_terminate_backend", "REASSIGN OWNED BY", "DROP OWNED BY", "DROP ROLE", "IF EXISTS"):
        assert step in statement
    assert statement.startswith("DO $$") and statement.rstrip().endswith("$$;")


def test_aiven_service_feeds_the_provider_connection_and_vault(mocks):
    from components.aiven_postgres import AivenPostgres, AivenPostgresArgs

    seen = {}

    class AivenMocks(RecordingMocks):
        def new_resource(self, args):
            name, outputs = super().new_resource(args)
            if args.name == "aiven-service":
                outputs.update(host="pg-x.aivencloud.com", port=12691, database="defaultdb", admin_user="avnadmin",
                               admin_password="avnadmin-secret", ca_certificate="-----BEGIN CERTIFICATE-----")
            return name, outputs

    aiven_mocks = AivenMocks()
    pulumi.runtime.set_mocks(aiven_mocks, preview=False)

    @pulumi.runtime.test
    def program():
        aiven = AivenPostgres("aiven", AivenPostgresArgs(
            api_url="https://api.aiven.io", project="p", cloud="google-europe-west1", plan="startup-4",
            service_name="pg-x", pg_version="16", termination_protection=True, token=Output.secret("tok")))
        pg = aiven.endpoint
        VaultDatabaseSecrets("v", VaultDatabaseSecretsArgs(
            endpoint=pg, vault_address="http://127.0.0.1:8200", mount_path="database", connection_name="postgresql",
            admin_username="vault_admin", admin_password=Output.secret("vault-admin-secret"), roles=(METRICS,)))
        return Output.all(pg.admin_connection(), pg.admin_connection().is_secret(), pg.admin_password.is_secret(),
                          pg.vault_connection_url()).apply(lambda a: seen.update(
                              connection=a[0], connection_secret=a[1], password_secret=a[2], url=a[3]))
    program()

    service = aiven_mocks.resources["aiven-service"]
    assert service.inputs["termination_protection"] is True and service.inputs["plan"] == "startup-4"
    assert seen["connection"]["host"] == "pg-x.aivencloud.com" and seen["connection"]["user"] == "avnadmin"
    assert seen["connection"]["sslmode"] == "verify-full"
    assert seen["connection"]["sslrootcert_pem"].startswith("-----BEGIN CERTIFICATE")
    assert seen["connection_secret"] and seen["password_secret"]
    assert seen["url"] == "postgresql://{{username}}:{{password}}@pg-x.aivencloud.com:12691/defaultdb?sslmode=require"
    connection = aiven_mocks.resources["v-connection"].inputs
    assert "avnadmin-secret" not in connection["connection_url"] and connection["username"] == "vault_admin"
