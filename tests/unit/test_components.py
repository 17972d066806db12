"""Each component, built against Pulumi mocks: which resources it registers and with what inputs."""

from __future__ import annotations

import json

import pulumi
import pulumi_vault as vault
import pytest
from pulumi import Output


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: dict[str, pulumi.runtime.MockResourceArgs] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources[args.name] = args
        outputs = dict(args.inputs)
        if args.typ == "random:index/randomPassword:RandomPassword":
            outputs["result"] = "generated-password"
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


SECRET_SIG = "4dabf18193072939515e22adb298388d"  # how the wire format marks a secret value


def unwrap_secret(value):
    """The value inside a secret, as mocks receive it; fails if it is not a secret."""
    assert isinstance(value, dict) and SECRET_SIG in value, f"not a secret: {value!r}"
    return value["value"]


@pytest.fixture
def mocks():
    recording = RecordingMocks()
    pulumi.runtime.set_mocks(recording, preview=False)
    yield recording


from components.access_roles import AccessRoles, AccessRolesArgs, VaultLogin  # noqa: E402
from components.app_identities import AppIdentities, AppIdentitiesArgs  # noqa: E402
from components.app_role import AppRole  # noqa: E402
from components.app_schema import AppSchema, AppSchemaArgs  # noqa: E402
from components.existing_postgres import ExistingPostgres, ExistingPostgresArgs  # noqa: E402
from components.vault_connections import plan_connections  # noqa: E402
from components.vault_database_secrets import (  # noqa: E402
    REVOCATION_STATEMENTS,
    VaultDatabaseSecrets,
    VaultDatabaseSecretsArgs,
)
from tables import APP_TABLES  # noqa: E402

METRICS = AppRole("metrics-readwrite", ("weekly_metrics_reporting",), "readwrite", 3600, 86400)
REPORTS = AppRole(
    "reports-read",
    ("weekly_metrics_reporting",),
    "read",
    600,
    3600,
    username_template="r-{{random 8}}{{ unix_time }} | truncate 63",
)


def connections(*roles: AppRole, rotate_root: bool = False):
    return plan_connections(
        roles, mount_path="database", connection_name="postgresql", admin_role="vault_admin", rotate_root=rotate_root
    )


def logins(plan) -> dict[str, VaultLogin]:
    return {c.login: VaultLogin(Output.from_input(c.login), Output.secret("vault-admin-secret")) for c in plan}


def secrets_args(pg, plan, rotate_root: bool = False) -> VaultDatabaseSecretsArgs:
    return VaultDatabaseSecretsArgs(
        endpoint=pg,
        vault_provider=vault_provider(),
        vault_address="http://127.0.0.1:8200",
        mount_path="database",
        connections=plan,
        logins=logins(plan),
        rotate_root=rotate_root,
        owner_role="app_owner",
    )


def vault_provider():
    return vault.Provider("vault", address="http://127.0.0.1:8200")


def endpoint():
    return ExistingPostgres(
        "pg", ExistingPostgresArgs(host="db.internal", port=5432, database="app", admin_user="admin", sslmode="require")
    ).endpoint


@pulumi.runtime.test
def test_existing_postgres_records_no_admin_password(mocks):
    """The admin's login comes from the deploy session (PGUSER, PGPASSFILE): the
    dynamic resources' connection carries neither a password nor a login name into
    the state, so that a preview reads with its own login."""
    pg = endpoint()

    def check(args):
        connection_is_secret, connection = args
        assert connection_is_secret and "password" not in connection and "user" not in connection
        assert connection["sslmode"] == "require"

    return Output.all(pg.admin_connection().is_secret(), pg.admin_connection()).apply(check)


@pulumi.runtime.test
def test_existing_postgres_provider_has_no_password_and_no_login_name(mocks):
    def check(_):
        (provider,) = [r for r in mocks.resources.values() if r.typ == "pulumi:providers:postgresql"]
        assert "password" not in provider.inputs and "username" not in provider.inputs

    return endpoint().provider.urn.apply(check)


@pulumi.runtime.test
def test_vault_connection_url_carries_no_password(mocks):
    def check(url):
        assert url == "postgresql://{{username}}:{{password}}@db.internal:5432/app?sslmode=require"
        assert "admin-secret" not in url

    return endpoint().vault_connection_url().apply(check)


def test_app_schema_tables_owner_and_sample_rows_on_dev_only(mocks):
    @pulumi.runtime.test
    def program():
        AppSchema(
            "dev", AppSchemaArgs(endpoint(), APP_TABLES, "app_owner", sample_data=True, keep_tables_on_destroy=False)
        )
        AppSchema(
            "prod", AppSchemaArgs(endpoint(), APP_TABLES, "app_owner_p", sample_data=False, keep_tables_on_destroy=True)
        )

    program()
    names = set(mocks.resources)
    assert {
        "dev-owner",
        "dev-weekly_metrics_reporting",
        "dev-employee_salary",
        "dev-weekly_metrics_reporting-sample-rows",
        "dev-employee_salary-sample-rows",
    } <= names
    assert not any(n.startswith("prod-") and n.endswith("sample-rows") for n in names)
    table = mocks.resources["dev-weekly_metrics_reporting"].inputs
    assert table["owner"] == "app_owner" and table["keep_on_destroy"] is False
    assert ["id", "serial PRIMARY KEY"] in table["columns"]
    assert mocks.resources["prod-employee_salary"].inputs["keep_on_destroy"] is True
    assert mocks.resources["dev-owner"].inputs["login"] is False


def test_postgres_provider_logs_in_as_the_session_without_assuming_a_superuser(mocks):
    @pulumi.runtime.test
    def program():
        endpoint()

    program()
    provider = mocks.resources["pg-admin"]
    assert provider.typ == "pulumi:providers:postgresql"
    # No login name: the provider logs in as the deploy session's PGUSER.
    assert provider.inputs["host"] == "db.internal" and "username" not in provider.inputs
    assert provider.inputs["superuser"] in (False, "false") and provider.inputs["sslmode"] == "require"


def test_access_roles_groups_grants_and_vault_admin(mocks):
    exported = {}

    @pulumi.runtime.test
    def program():
        pg = endpoint()
        schema = AppSchema("s", AppSchemaArgs(pg, APP_TABLES, "app_owner", False, True))
        access = AccessRoles(
            "a",
            AccessRolesArgs(
                pg,
                (METRICS, REPORTS),
                schema.tables,
                schema.sequences,
                connections(METRICS, REPORTS),
                schema.owner_role,
            ),
        )
        login = access.vault_logins["vault_admin"]
        return Output.all(login.password.is_secret(), login.username).apply(
            lambda args: exported.update(secret=args[0], username=args[1])
        )

    program()
    assert exported == {"secret": True, "username": "vault_admin"}
    r = mocks.resources
    assert r["a-metrics_readwrite"].typ == "postgresql:index/role:Role"
    assert r["a-metrics_readwrite"].inputs["login"] is False
    # One grant per role and kind of object (not one per table).
    readwrite = r["a-metrics_readwrite-on-tables"].inputs
    assert readwrite["objectType"] == "table" and readwrite["objects"] == ["weekly_metrics_reporting"]
    assert readwrite["privileges"] == ["SELECT", "INSERT", "UPDATE", "DELETE"]
    sequences = r["a-metrics_readwrite-on-sequences"].inputs
    assert sequences["objectType"] == "sequence" and sequences["privileges"] == ["USAGE", "SELECT"]
    assert sequences["objects"] == ["weekly_metrics_reporting_id_seq"]
    read = r["a-reports_read-on-tables"].inputs
    assert read["privileges"] == ["SELECT"]
    assert "a-reports_read-on-sequences" not in r  # read-only roles need no sequence
    assert "a-metrics_readwrite-weekly_metrics_reporting" not in r  # no grant per table on a new stack
    # Nothing may reach the sensitive table, and no grant may cover every table (empty objects).
    grants = [a.inputs for a in r.values() if a.typ == "postgresql:index/grant:Grant"]
    assert grants and all(g["objects"] and "employee_salary" not in g["objects"] for g in grants)
    admin = r["a-vault-login-vault_admin"].inputs
    assert admin["login"] is True and admin["createRole"] is True
    assert r["a-vault-login-vault_admin-password"].typ == "random:index/randomPassword:RandomPassword"
    membership = r["a-metrics_readwrite-vault_admin"].inputs
    assert membership["withAdminOption"] is True and membership["grantRole"] == "metrics_readwrite"
    assert membership["role"] == "vault_admin"


def test_a_migrate_role_gets_no_grant_of_its_own_only_the_owner_membership(mocks):
    migrate = AppRole("schema-migrate", (), "migrate", 600, 3600)

    @pulumi.runtime.test
    def program():
        pg = endpoint()
        schema = AppSchema("s", AppSchemaArgs(pg, APP_TABLES, "app_owner", False, True))
        AccessRoles(
            "a",
            AccessRolesArgs(
                pg,
                (METRICS, migrate),
                schema.tables,
                schema.sequences,
                connections(METRICS, migrate),
                schema.owner_role,
            ),
        )

    program()
    r = mocks.resources
    # A grant with no objects would cover (or revoke on) every table of the schema,
    # racing the other roles' grants on them.
    assert not [n for n, a in r.items() if a.typ == "postgresql:index/grant:Grant" and "schema_migrate" in n]
    assert r["a-schema_migrate-owner"].inputs["grantRole"] == "app_owner"


def test_grants_per_table_left_by_an_earlier_version_are_declared_once_more_to_be_forgotten(mocks):
    @pulumi.runtime.test
    def program():
        pg = endpoint()
        schema = AppSchema("s", AppSchemaArgs(pg, APP_TABLES, "app_owner", False, True))
        AccessRoles(
            "a",
            AccessRolesArgs(
                pg,
                (METRICS,),
                schema.tables,
                schema.sequences,
                connections(METRICS),
                schema.owner_role,
                per_table_grants_in_state=True,
            ),
        )

    program()
    r = mocks.resources
    old = r["a-metrics_readwrite-weekly_metrics_reporting"].inputs
    assert (
        old["objects"] == ["weekly_metrics_reporting"]
        and old["privileges"] == r["a-metrics_readwrite-on-tables"].inputs["privileges"]
    )
    assert r["a-metrics_readwrite-weekly_metrics_reporting-sequences"].inputs["objects"] == [
        "weekly_metrics_reporting_id_seq"
    ]


def test_with_rotate_root_each_connection_has_its_own_login_and_only_its_groups(mocks):
    plan = connections(METRICS, REPORTS, rotate_root=True)
    metrics_login, reports_login = (c.login for c in plan)
    assert metrics_login != reports_login and metrics_login.startswith("vault_admin_")

    @pulumi.runtime.test
    def program():
        pg = endpoint()
        schema = AppSchema("s", AppSchemaArgs(pg, APP_TABLES, "app_owner", False, True))
        AccessRoles(
            "a", AccessRolesArgs(pg, (METRICS, REPORTS), schema.tables, schema.sequences, plan, schema.owner_role)
        )

    program()
    memberships = {
        (a.inputs["role"], a.inputs["grantRole"])
        for a in mocks.resources.values()
        if a.typ == "postgresql:index/grantRole:GrantRole"
    }
    assert memberships == {(metrics_login, "metrics_readwrite"), (reports_login, "reports_read")}


def test_vault_database_secrets_mount_connections_and_roles(mocks):
    @pulumi.runtime.test
    def program():
        VaultDatabaseSecrets("v", secrets_args(endpoint(), connections(METRICS, REPORTS)))

    program()
    r = mocks.resources
    assert r["v-mount"].inputs["path"] == "database" and r["v-mount"].inputs["type"] == "database"
    assert r["v-mount"].provider.startswith("urn:pulumi:") and "pulumi:providers:vault::vault" in r["v-mount"].provider
    shared = r["v-connection"].inputs
    assert shared["name"] == "postgresql" and shared["allowedRoles"] == ["metrics-readwrite"]
    pg = unwrap_secret(shared["postgresql"])  # secret as a whole: it holds the password
    assert pg["username"] == "vault_admin" and pg["passwordAuthentication"] == "scram-sha-256"
    assert pg["password"] == "vault-admin-secret" and "passwordWo" not in pg
    assert not any(a.typ == "vault:generic/endpoint:Endpoint" for a in r.values())  # no rotate-root
    assert "vault-admin-secret" not in pg["connectionUrl"]
    assert "{{username}}:{{password}}" in pg["connectionUrl"]
    own = r["v-connection-reports-read"].inputs
    assert own["allowedRoles"] == ["reports-read"]
    assert "truncate 63" in unwrap_secret(own["postgresql"])["usernameTemplate"]
    role = r["v-role-metrics-readwrite"].inputs
    assert role["dbName"] == "postgresql" and role["defaultTtl"] == 3600 and role["maxTtl"] == 86400
    (creation,) = role["creationStatements"]
    assert "VALID UNTIL '{{expiration}}'" in creation and 'IN ROLE "metrics_readwrite"' in creation
    assert role["revocationStatements"] == REVOCATION_STATEMENTS
    assert r["v-role-reports-read"].inputs["dbName"] == "postgresql-reports-read"
    # Each role's leases are revoked before it goes: the revoker depends on the role.
    revoker = r["v-leases-metrics-readwrite"]
    assert revoker.inputs["role"] == "metrics-readwrite" and revoker.inputs["mount"] == "database"


def test_rotate_root_sends_the_first_password_write_only_then_rotates(mocks):
    plan = connections(METRICS, rotate_root=True)

    @pulumi.runtime.test
    def program():
        VaultDatabaseSecrets("v", secrets_args(endpoint(), plan, rotate_root=True))

    program()
    r = mocks.resources
    pg = unwrap_secret(r["v-connection"].inputs["postgresql"])
    assert "password" not in pg and pg["passwordWo"] == "vault-admin-secret"
    assert float(pg["passwordWoVersion"]).is_integer() and pg["username"] == plan[0].login
    rotate = r["v-rotate-root"]
    assert rotate.typ == "vault:generic/endpoint:Endpoint"
    assert rotate.inputs["path"] == "database/rotate-root/postgresql"
    assert rotate.inputs["disableRead"] is True and rotate.inputs["disableDelete"] is True


def test_password_version_changes_with_the_server_or_the_login_only():
    from components.vault_database_secrets import password_version

    first = password_version("db:5432/app", "vault_admin_abc123")
    assert first == password_version("db:5432/app", "vault_admin_abc123")
    assert first != password_version("other:5432/app", "vault_admin_abc123")
    assert first != password_version("db:5432/app", "vault_admin_def456")


def test_a_locked_role_keeps_its_vault_role_but_leaves_allowed_roles(mocks):
    from dataclasses import replace

    locked = replace(METRICS, locked=True)
    other = AppRole("metrics-read", ("weekly_metrics_reporting",), "read", 600, 3600)

    @pulumi.runtime.test
    def program():
        VaultDatabaseSecrets("v", secrets_args(endpoint(), connections(locked, other)))

    program()
    r = mocks.resources
    assert r["v-connection"].inputs["allowedRoles"] == ["metrics-read"]
    assert "v-role-metrics-readwrite" in r and "v-leases-metrics-readwrite" in r


def test_app_identities_one_approle_and_one_least_privilege_policy_per_role(mocks):
    from components.app_identities import creds_policy, policy_name

    @pulumi.runtime.test
    def program():
        AppIdentities("apps", AppIdentitiesArgs(vault_provider(), "database-approle", "database", (METRICS, REPORTS)))

    program()
    r = mocks.resources
    assert r["apps-approle"].inputs["type"] == "approle"
    policy = r["apps-policy-metrics-readwrite"].inputs
    assert policy["name"] == "pgcreds-database-metrics-readwrite"
    assert policy["policy"] == creds_policy("database", "metrics-readwrite")
    assert policy["policy"].count("path ") == 1 and 'path "database/creds/metrics-readwrite"' in policy["policy"]
    role = r["apps-metrics-readwrite"].inputs
    assert role["roleName"] == "metrics-readwrite" and role["tokenPolicies"] == [policy["name"]]
    assert role["tokenTtl"] == 3600 and role["tokenMaxTtl"] == 86400
    assert role["secretIdTtl"] == 3600 and role["secretIdNumUses"] == 1
    assert "roleId" not in role and "secretId" not in role
    assert policy_name("team/db", "x") == "pgcreds-team-db-x"


def test_auth_path_check_refuses_another_auth_method():
    from components.app_identities import AuthPathTaken, checked_auth_path

    table = json.dumps({"token/": {"type": "token"}, "ldap/": {"type": "ldap"}, "apps/": {"type": "approle"}})
    assert (
        checked_auth_path(table, "apps", "pgcreds:") == "apps" and checked_auth_path(table, "new", "pgcreds:") == "new"
    )
    with pytest.raises(AuthPathTaken, match="'ldap' auth method at 'auth/ldap'.*pgcreds:vaultAppRolePath"):
        checked_auth_path(table, "ldap", "pgcreds:")


def test_revocation_ends_sessions_reassigns_and_drops():
    (statement,) = REVOCATION_STATEMENTS
    for step in (
        "pg_advisory_xact_lock",
        "pg_terminate_backend",
        "REASSIGN OWNED BY",
        "DROP OWNED BY",
        "DROP ROLE",
        "IF EXISTS",
    ):
        assert step in statement
    assert statement.startswith("DO $$") and statement.rstrip().endswith("$$;")


def test_aiven_service_feeds_the_provider_connection_and_vault(mocks):
    from components.aiven_postgres import AivenPostgres, AivenPostgresArgs

    seen = {}

    class AivenMocks(RecordingMocks):
        def new_resource(self, args):
            name, outputs = super().new_resource(args)
            if args.typ == "aiven:index/pg:Pg":
                outputs.update(
                    serviceHost="pg-x.aivencloud.com",
                    servicePort=12691,
                    serviceUsername="avnadmin",
                    servicePassword="avnadmin-secret",
                    pg={"dbname": "defaultdb"},
                )
            return name, outputs

        def call(self, args):
            if args.token == "aiven:index/getProject:getProject":
                return {"project": args.args["project"], "caCert": "-----BEGIN CERTIFICATE-----"}
            if args.token == "aiven:index/getServicePlanList:getServicePlanList":
                return {
                    "project": args.args["project"],
                    "serviceType": "pg",
                    "servicePlans": [
                        {
                            "servicePlan": p,
                            "serviceType": "pg",
                            "isClusterPlan": False,
                            "maxMemoryPercent": 75,
                            "nodeCount": 1,
                            "primaryCount": 1,
                            "shardCount": 0,
                        }
                        for p in ("hobbyist", "startup-4")
                    ],
                }
            return {}

    aiven_mocks = AivenMocks()
    pulumi.runtime.set_mocks(aiven_mocks, preview=False)

    @pulumi.runtime.test
    def program():
        aiven = AivenPostgres(
            "aiven",
            AivenPostgresArgs(
                project="p",
                cloud="google-europe-west1",
                plan="startup-4",
                maintenance={"dow": "sunday", "time": "03:00:00"},
                service_name="pg-x",
                pg_version="16",
                termination_protection=True,
            ),
        )
        pg = aiven.endpoint
        VaultDatabaseSecrets("v", secrets_args(pg, connections(METRICS)))
        return Output.all(
            pg.admin_connection(),
            pg.admin_connection().is_secret(),
            pg.admin_password.is_secret(),
            pg.vault_connection_url(),
        ).apply(lambda a: seen.update(connection=a[0], connection_secret=a[1], password_secret=a[2], url=a[3]))

    program()

    service = aiven_mocks.resources["aiven-service"]
    assert service.typ == "aiven:index/pg:Pg" and service.inputs["terminationProtection"] is True
    assert service.inputs["plan"] == "startup-4" and service.inputs["cloudName"] == "google-europe-west1"
    assert service.inputs["pgUserConfig"] == {"pgVersion": "16"}
    assert (service.inputs["maintenanceWindowDow"], service.inputs["maintenanceWindowTime"]) == ("sunday", "03:00:00")
    assert "pulumi:providers:aiven::aiven-aiven" in service.provider
    # The token is never an input (the provider reads the run's AIVEN_TOKEN): no state holds it.
    assert "apiToken" not in aiven_mocks.resources["aiven-aiven"].inputs
    assert seen["connection"]["host"] == "pg-x.aivencloud.com" and seen["connection"]["user"] == "avnadmin"
    assert seen["connection"]["sslmode"] == "verify-full"
    assert seen["connection"]["sslrootcert_pem"].startswith("-----BEGIN CERTIFICATE")
    assert seen["connection_secret"] and seen["password_secret"]
    assert seen["url"] == "postgresql://{{username}}:{{password}}@pg-x.aivencloud.com:12691/defaultdb?sslmode=require"
    connection = unwrap_secret(aiven_mocks.resources["v-connection"].inputs["postgresql"])
    assert "avnadmin-secret" not in connection["connectionUrl"] and connection["username"] == "vault_admin"
    provider = aiven_mocks.resources["aiven-admin"].inputs
    assert provider["host"] == "pg-x.aivencloud.com" and provider["sslmode"] == "verify-full"
    assert open(provider["sslrootcert"]).read().startswith("-----BEGIN CERTIFICATE")


def test_aiven_plan_check_names_the_setting_and_the_plans_offered():
    from types import SimpleNamespace

    from components.aiven_postgres import UnknownPlan, checked_plan

    offered = [SimpleNamespace(service_plan=p) for p in ("startup-4", "hobbyist")]
    assert checked_plan(offered, "startup-4", "p") == "startup-4"
    with pytest.raises(UnknownPlan, match="pgcreds:aivenPlan: 'startup-999'.*hobbyist, startup-4"):
        checked_plan(offered, "startup-999", "p")


def test_mount_path_check_allows_a_free_path_or_a_database_engine_only():
    from components.vault_database_secrets import MountPathTaken, checked_mount_path

    table = json.dumps({"database/": {"type": "database"}, "secret/": {"type": "kv"}})
    assert checked_mount_path(table, "database", "pgcreds:") == "database"
    assert checked_mount_path(table, "new-path", "pgcreds:") == "new-path"
    with pytest.raises(MountPathTaken, match="'kv' secrets engine at 'secret'.*pgcreds:vaultMountPath"):
        checked_mount_path(table, "secret", "pgcreds:")


def test_vault_identity_is_the_identity_mount_uuid():
    from components.vault_database_secrets import vault_identity

    table = {"identity/": {"uuid": "id-1"}, "sys/": {"uuid": "sys-1"}, "cubbyhole/": {"uuid": "local"}}
    assert vault_identity(json.dumps(table)) == "id-1"
    assert vault_identity(json.dumps({"sys/": {"uuid": "sys-1"}})) == "sys-1"


def test_lease_revoker_refuses_another_vault_and_accepts_the_same_one():
    from providers.vault import _LeaseRevokerProvider

    olds = {"address": "http://a:8200", "vault_id": "id-1", "mount": "database", "role": "r", "connection": "c"}
    same = _LeaseRevokerProvider().check(olds, {**olds, "address": "http://b:8200"})
    assert same.failures == []
    other = _LeaseRevokerProvider().check(olds, {**olds, "vault_id": "id-2"})
    assert other.failures and "pgcreds:vaultAddress" in other.failures[0].reason
    assert _LeaseRevokerProvider().check({}, {**olds, "vault_id": "id-2"}).failures == []  # first deployment


def test_termination_guard_refuses_its_delete_only_while_protected():
    from providers.aiven import TerminationProtected, _TerminationGuardProvider

    guard = _TerminationGuardProvider()
    with pytest.raises(TerminationProtected, match="pgcreds:aivenTerminationProtection false.*pulumi up"):
        guard.delete("g", {"service_name": "pg-x", "protected": True})
    guard.delete("g", {"service_name": "pg-x", "protected": False})
    assert guard.diff(
        "g", {"service_name": "pg-x", "protected": True}, {"service_name": "pg-x", "protected": False}
    ).changes
