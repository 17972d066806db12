"""The package's schema, as the SDK's component analyzer writes it for other
languages from ApplicationDatabase's annotations, and its inputs' checks."""

import pytest
from pulumi.provider.experimental.analyzer import Analyzer

from components.application_database import Access, ApplicationDatabase, _as_settings
from settings import SettingsError, parse_application

ENV = {"VAULT_TOKEN": "t", "PGPASSFILE": "/run/session/pgpass", "PGUSER": "pgcreds_deployer"}


@pytest.fixture(scope="module")
def analyzed():
    return Analyzer("pgcreds").analyze([ApplicationDatabase])


def test_the_component_its_required_inputs_and_typed_outputs(analyzed):
    component = analyzed["component_definitions"]["ApplicationDatabase"]
    required = {name for name, prop in component.inputs.items() if not prop.optional}
    assert required == {"application", "vaultMountPath", "roles"}
    assert {"postgresHost", "postgresPort", "vaultAddress", "keepTablesOnDestroy"} <= set(component.inputs)
    # Logins are never inputs: they come from the deploy session's environment.
    assert not [name for name in component.inputs if "password" in name.lower() or "token" in name.lower()]
    assert set(component.outputs) == {
        "postgres",
        "schema",
        "vaultAddress",
        "mountPath",
        "credentialPaths",
        "appRoleLogins",
        "groupRoles",
        "roleAccess",
    }
    descriptions = [prop.description for prop in [*component.inputs.values(), *component.outputs.values()]]
    # (one line each: a docstring's continuation keeps its indent in every SDK's comments)
    assert all(text and "\n" not in text for text in descriptions)


def test_a_roles_access_is_an_enum_and_its_fields_camel_case(analyzed):
    types = analyzed["type_definitions"]
    access = types["Access"]
    assert [(value.name, value.value) for value in access.enum or []] == [
        ("Read", "read"),
        ("ReadWrite", "readwrite"),
        ("Migrate", "migrate"),
    ]
    role = types["ApplicationRole"]
    assert {"name", "access", "tables", "defaultTtl", "maxTtl", "secretIdUses"} <= set(role.properties)
    assert role.properties_mapping["defaultTtl"] == "default_ttl"


def test_inputs_are_checked_as_settings_and_named_after_the_component():
    raw = _as_settings(
        {
            "application": "orders",
            "vault_mount_path": "sys/db",
            "postgres_port": 99999,
            "roles": [{"name": "billing-read", "access": Access.Read, "tables": ["weekly_metrics_reporting"]}],
        }
    )
    with pytest.raises(SettingsError) as caught:
        parse_application({**raw, "vaultAddress": "https://vault:8200"}, ENV, "dev", component="orders")
    message = str(caught.value)
    assert "orders.vaultMountPath: 'sys/db' is reserved by Vault" in message
    assert "orders.postgresPort: must be a TCP port number" in message
    assert "pgcreds:" not in message


def test_role_names_start_with_the_application_and_its_own_roles_by_default():
    roles = [{"name": "read", "access": "read", "tables": ["weekly_metrics_reporting"]}]
    with pytest.raises(SettingsError) as caught:
        parse_application(
            {"application": "orders", "vaultMountPath": "orders-db", "vaultAddress": "https://v:8200", "roles": roles},
            ENV,
            "dev",
            component="orders",
        )
    assert "orders.roles[0].name: 'read' is not a name of the application 'orders'" in str(caught.value)

    roles[0]["name"] = "orders-read"
    settings = parse_application(
        {"application": "orders", "vaultMountPath": "orders-db", "vaultAddress": "https://v:8200", "roles": roles},
        ENV,
        "dev",
        component="orders",
    )
    assert (settings.schema, settings.owner_role, settings.vault_admin_role) == (
        "orders",
        "orders_owner",
        "orders_vault",
    )
    assert [t.name for t in settings.tables] == ["weekly_metrics_reporting"]
    assert [c.name for c in settings.vault.connections] == ["orders"]


def test_a_bad_application_name_is_refused_first():
    with pytest.raises(SettingsError, match=r"orders\.application: 'Orders!' is not an application name"):
        parse_application({"application": "Orders!"}, ENV, "dev", component="orders")


def test_no_role_of_a_consumer_may_be_granted_the_sensitive_table():
    roles = [{"name": "orders-read", "access": "read", "tables": ["employee_salary"]}]
    with pytest.raises(SettingsError, match=r"orders\.roles\[0\]\.tables: 'employee_salary' is a sensitive table"):
        parse_application(
            {"application": "orders", "vaultMountPath": "orders-db", "vaultAddress": "https://v:8200", "roles": roles},
            ENV,
            "dev",
            component="orders",
        )
