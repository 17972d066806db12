"""Settings validation: every bad input fails with a message naming the setting."""

import json

import pytest
from pulumi import Output

from components.aiven_postgres import AivenPostgresArgs
from settings import SettingsError, parse_duration, parse_settings

ENV = {"VAULT_TOKEN": "t", "PGPASSFILE": "/run/session/pgpass", "PGUSER": "postgres", "PGCREDS_SESSION_KIND": "deploy"}
BASE = {"vaultAddress": "http://127.0.0.1:8200"}


def parse(raw=None, environ=ENV, stack="dev", secret=lambda key: None, in_clear=lambda key: False):
    return parse_settings({**BASE, **(raw or {})}, secret, environ, stack, in_clear=in_clear)


def role(**fields):
    return {
        "roles": [
            {
                "name": "metrics-readwrite",
                "tables": ["weekly_metrics_reporting"],
                "access": "readwrite",
                "defaultTtl": "1h",
                "maxTtl": "24h",
                **fields,
            }
        ]
    }


def error_of(raw=None, **kwargs) -> str:
    with pytest.raises(SettingsError) as caught:
        parse(raw, **kwargs)
    return str(caught.value)


def test_defaults_give_the_metrics_readwrite_role():
    settings = parse()
    (only,) = settings.roles
    assert (only.name, only.group_role, only.tables) == (
        "metrics-readwrite",
        "metrics_readwrite",
        ("weekly_metrics_reporting",),
    )
    assert (only.default_ttl_seconds, only.max_ttl_seconds) == (3600, 86400)
    assert only.table_privileges == ("SELECT", "INSERT", "UPDATE", "DELETE")
    assert settings.vault.mount_path == "database" and settings.vault.connection_name == "postgresql"
    assert settings.keep_tables_on_destroy is True and settings.sample_data is False


def test_roles_given_as_json_text_are_parsed():
    settings = parse(
        {
            "roles": '[{"name": "reports-read", "tables": ["weekly_metrics_reporting"], '
            '"access": "read", "defaultTtl": "30m", "maxTtl": "2h"}]'
        }
    )
    assert settings.roles[0].table_privileges == ("SELECT",) and settings.roles[0].sequence_privileges == ()


@pytest.mark.parametrize(
    "text,seconds",
    [("1h", 3600), ("90m", 5400), ("1h30m", 5400), ("3600s", 3600), ("3600", 3600), ("1d", 86400), (7200, 7200)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["-1h", "1x", "", "h", "1.5h", None, True, "1h-"])
def test_bad_durations(text):
    assert parse_duration(text) is None


def test_default_ttl_above_max_ttl():
    message = error_of(role(defaultTtl="2h", maxTtl="1h"))
    assert "pgcreds:roles[0].defaultTtl" in message and "longer than maxTtl" in message


@pytest.mark.parametrize("ttl", ["-1h", "soon", "0"])
def test_negative_or_unparsable_ttl(ttl):
    message = error_of(role(maxTtl=ttl))
    assert "pgcreds:roles[0].maxTtl" in message and "1h, 30m" in message


def test_unknown_access_level():
    message = error_of(role(access="admin"))
    assert "pgcreds:roles[0].access" in message and "read, readwrite" in message


def test_empty_table_list():
    assert "pgcreds:roles[0].tables: must be a non-empty list" in error_of(role(tables=[]))


def test_empty_role_list():
    assert "pgcreds:roles: must be a non-empty list" in error_of({"roles": []})


@pytest.mark.parametrize("table", ['x"; DROP TABLE employee_salary; --', "Weekly", "a b", "1abc"])
def test_table_name_injection_or_invalid(table):
    message = error_of(role(tables=[table]))
    assert "pgcreds:roles[0].tables" in message and "not a valid table name" in message


def test_a_table_the_program_does_not_make_is_left_to_the_catalog_check():
    """A migration may have made it: whether it exists is asked at preview (PgExistingTable)."""
    (only,) = parse(role(tables=["weekly_metrics_reporting", "payroll"])).roles
    assert only.tables == ("weekly_metrics_reporting", "payroll")


def test_a_migrate_role_names_no_tables():
    (only,) = parse({"roles": [{"name": "app-migrate", "access": "migrate"}]}).roles
    assert only.acts_as_owner and only.tables == () and only.table_privileges == ()
    assert "pgcreds:roles[0].tables: a migrate role names no tables" in error_of(
        {"roles": [{"name": "app-migrate", "access": "migrate", "tables": ["weekly_metrics_reporting"]}]}
    )


@pytest.mark.parametrize("name", ['x"; DROP TABLE employee_salary; --', "Metrics", "-x", "a--b", "x" * 49, ""])
def test_role_name_injection_or_invalid(name):
    assert "pgcreds:roles[0].name" in error_of(role(name=name))


def test_role_reusing_a_program_role_name():
    assert "pgcreds:roles[0].name" in error_of(role(name="vault-admin"))


def test_no_deploy_session_names_the_admin_and_the_fix():
    message = error_of(environ={"VAULT_TOKEN": "t"})
    assert "pgcreds:postgresAdminUser: no login for 'postgres': open a deploy session" in message
    assert "PGPASSFILE" in message


def test_a_session_without_pguser_names_the_setting_and_the_fix():
    message = error_of(environ={"VAULT_TOKEN": "t", "PGPASSFILE": "/run/session/pgpass"})
    assert "pgcreds:postgresAdminUser: PGUSER is not set" in message and "open a deploy session" in message


def test_another_login_than_the_admin_is_refused_to_deploy():
    message = error_of(environ={**ENV, "PGUSER": "someone_else"})
    assert "pgcreds:postgresAdminUser: PGUSER is 'someone_else', but this stack deploys as 'postgres'" in message


def test_a_preview_session_may_preview_but_not_deploy(monkeypatch):
    preview = {**ENV, "PGUSER": "v-token-preview-x", "PGCREDS_SESSION_KIND": "preview"}
    monkeypatch.setattr("pulumi.runtime.is_dry_run", lambda: True)
    assert parse(environ=preview).postgres.admin_user == "postgres"  # the declared login stays the deployer's
    monkeypatch.setattr("pulumi.runtime.is_dry_run", lambda: False)
    message = error_of(environ=preview)
    assert "PGUSER 'v-token-preview-x' is a preview session's login, which may only read" in message


def test_an_admin_password_setting_is_refused():
    secret = Output.secret("from-config")
    message = error_of(secret=lambda key: secret if key == "postgresAdminPassword" else None)
    assert "pgcreds:postgresAdminPassword: is no longer read" in message
    assert "pulumi config rm pgcreds:postgresAdminPassword" in message


def test_a_static_admin_password_in_the_environment_is_refused():
    message = error_of(environ={**ENV, "PGCREDS_POSTGRES_ADMIN_PASSWORD": "pw"})
    assert "PGCREDS_POSTGRES_ADMIN_PASSWORD is set: a static admin password is not taken" in message


def test_the_existing_endpoint_carries_no_password():
    assert not hasattr(parse().postgres, "admin_password")


def test_missing_vault_token():
    assert "export VAULT_TOKEN" in error_of(environ={"PGPASSFILE": "/run/session/pgpass"})


def test_vault_address_required():
    assert "pgcreds:vaultAddress" in error_of({"vaultAddress": "not a url"})


def test_sslmode_disable_only_on_dev():
    assert parse({"postgresSslMode": "disable"}).postgres.sslmode == "disable"
    assert "pgcreds:postgresSslMode" in error_of({"postgresSslMode": "disable"}, stack="prod")


def test_bad_port_and_unknown_sslmode_reported_together():
    message = error_of({"postgresPort": "fivefour", "postgresSslMode": "sometimes"})
    assert "pgcreds:postgresPort" in message and "pgcreds:postgresSslMode" in message


def test_username_template_must_truncate():
    assert "pgcreds:roles[0].usernameTemplate" in error_of(role(usernameTemplate="{{.RoleName}}"))


def test_unknown_role_field():
    assert "unknown field(s) ttl" in error_of(role(ttl="1h"))


def test_duplicate_group_role():
    roles = role()["roles"] * 1 + [{**role()["roles"][0], "name": "metrics_readwrite"}]
    assert "used twice" in error_of({"roles": roles})


AIVEN = {
    "postgresMode": "aiven",
    "aivenProject": "my-project",
    "aivenCloud": "google-europe-west1",
    "aivenPlan": "startup-4",
}
AIVEN_ENV = {"VAULT_TOKEN": "t", "AIVEN_TOKEN": "a"}


def test_aiven_mode_defaults():
    settings = parse(AIVEN, environ=AIVEN_ENV, stack="prod")
    aiven = settings.postgres
    # The admin password comes from the service: none is asked for in aiven mode.
    assert isinstance(aiven, AivenPostgresArgs)
    assert aiven.termination_protection is True and aiven.service_name == "pgcreds-prod"
    assert aiven.pg_version == "16" and not hasattr(aiven, "token")
    assert aiven.sslmode == "verify-full"


def test_aiven_termination_protection_off_by_default_on_dev_only():
    assert parse(AIVEN, environ=AIVEN_ENV, stack="dev").postgres.termination_protection is False
    assert (
        parse(
            {**AIVEN, "aivenTerminationProtection": "false"}, environ=AIVEN_ENV, stack="prod"
        ).postgres.termination_protection
        is False
    )


def test_aiven_missing_project():
    message = error_of({**AIVEN, "aivenProject": ""}, environ=AIVEN_ENV)
    assert "pgcreds:aivenProject: is required when postgresMode is 'aiven'" in message


def test_aiven_missing_token():
    message = error_of(AIVEN, environ={"VAULT_TOKEN": "t"})
    assert "pgcreds:aivenToken: no Aiven API token" in message and "AIVEN_TOKEN" in message
    assert "deployer.session --aiven" in message


def test_aiven_token_in_the_settings_is_refused_with_the_way_into_vault():
    token = Output.secret("from-config")
    message = error_of(AIVEN, environ=AIVEN_ENV, secret=lambda key: token if key == "aivenToken" else None)
    assert "pgcreds:aivenToken: is no longer read" in message
    assert "--aiven-token-file" in message and "pulumi config rm pgcreds:aivenToken" in message
    assert "written in clear" not in message


@pytest.mark.parametrize("plan", ["large", "startup", "startup-x", "Startup-4", "startup_4"])
def test_aiven_unknown_plan_format(plan):
    assert "pgcreds:aivenPlan" in error_of({**AIVEN, "aivenPlan": plan}, environ=AIVEN_ENV)


def test_aiven_sslmode_disable_outside_dev():
    assert "pgcreds:postgresSslMode" in error_of(
        {**AIVEN, "postgresSslMode": "disable"}, environ=AIVEN_ENV, stack="prod"
    )


def test_aiven_half_a_maintenance_window():
    assert "pgcreds:aivenMaintenanceTime" in error_of({**AIVEN, "aivenMaintenanceDow": "sunday"}, environ=AIVEN_ENV)
    assert "pgcreds:aivenMaintenanceDow" in error_of({**AIVEN, "aivenMaintenanceTime": "03:00:00"}, environ=AIVEN_ENV)
    assert "pgcreds:aivenMaintenanceTime" in error_of(
        {**AIVEN, "aivenMaintenanceDow": "sunday", "aivenMaintenanceTime": "3am"}, environ=AIVEN_ENV
    )


@pytest.mark.parametrize("path", ["sys", "sys/x", "cubbyhole", "auth/x", "identity", "SYS"])
def test_mount_paths_vault_reserves_are_refused(path):
    message = error_of({"vaultMountPath": path})
    assert "pgcreds:vaultMountPath" in message and "reserved by Vault" in message


@pytest.mark.parametrize("key", ["tableOwnerRole", "vaultAdminRole"])
@pytest.mark.parametrize("name", ["pg_monitor", "public", "postgres", "current_user"])
def test_own_role_names_postgres_reserves_are_refused(key, name):
    message = error_of({key: name})
    assert f"pgcreds:{key}" in message


@pytest.mark.parametrize("name", ["pg-monitor", "public"])
def test_group_role_names_postgres_reserves_are_refused(name):
    message = error_of(role(name=name))
    assert "pgcreds:roles[0].name" in message and "reserves" in message


def test_vault_admin_and_table_owner_must_differ():
    message = error_of({"tableOwnerRole": "app_roles", "vaultAdminRole": "app_roles"})
    assert "pgcreds:vaultAdminRole" in message and "different names" in message


def test_own_roles_must_not_be_the_admin_login():
    assert "pgcreds:vaultAdminRole" in error_of({"postgresAdminUser": "platform", "vaultAdminRole": "platform"})


def test_a_sensitive_table_is_refused():
    message = error_of(role(tables=["weekly_metrics_reporting", "employee_salary"]))
    assert "pgcreds:roles[0].tables" in message and "sensitive" in message


@pytest.mark.parametrize("field", ["defaultTtl", "maxTtl"])
@pytest.mark.parametrize("ttl", ["25h", "2d", "9999999999999h", "86401s"])
def test_ttls_over_24h_are_refused(field, ttl):
    fields = {"defaultTtl": "1h", "maxTtl": "24h", field: ttl}
    message = error_of(role(**fields))
    assert f"pgcreds:roles[0].{field}" in message and "longer than 24h" in message


@pytest.mark.parametrize(
    "template",
    [
        '{{ printf "rd_%s" (random 8) }} | truncate 63',  # truncate outside the braces
        '{{ printf "rd_%s" (random 8) | truncate 63',  # never closed
        "{{ {{ random 8 }} | truncate 63 }}",  # nested
        "rd_static | truncate 63",  # no action at all
        42,
    ],
)
def test_bad_username_templates_are_refused(template):
    assert "pgcreds:roles[0].usernameTemplate" in error_of(role(usernameTemplate=template))


def test_a_good_username_template_passes():
    template = '{{ printf "rd_%s_%s" (random 10 | lowercase) (unix_time) | truncate 63 }}'
    (only,) = parse(role(usernameTemplate=template)).roles
    assert only.username_template == template


def test_rotate_root_and_application_identity_defaults():
    settings = parse()
    assert settings.vault.rotate_root is True and settings.vault.approle_path == "database-approle"
    (connection,) = settings.vault.connections
    assert connection.name == "postgresql" and connection.login.startswith("vault_admin_")
    (only,) = settings.roles
    assert (only.locked, only.secret_id_ttl_seconds, only.secret_id_uses) == (False, 3600, 1)


def test_without_rotate_root_every_connection_logs_in_as_vault_admin():
    template = '{{ printf "r_%s" (random 8) | truncate 63 }}'
    raw = {
        "vaultRotateRoot": "false",
        "roles": [role()["roles"][0], {**role()["roles"][0], "name": "reports-read", "usernameTemplate": template}],
    }
    assert {c.login for c in parse(raw).vault.connections} == {"vault_admin"}


def test_a_new_mount_path_or_connection_name_is_a_new_rotated_login():
    logins = {
        parse({"vaultMountPath": path, "vaultConnectionName": name}).vault.connections[0].login
        for path, name in (("database", "postgresql"), ("db2", "postgresql"), ("database", "pg2"))
    }
    assert len(logins) == 3


def test_locked_roles_leave_allowed_roles():
    settings = parse(role(locked=True))
    assert settings.roles[0].locked and settings.vault.connections[0].allowed_roles == []
    assert "pgcreds:roles[0].locked" in error_of(role(locked="yes"))


@pytest.mark.parametrize(
    "fields,key",
    [
        ({"secretIdUses": 0}, "secretIdUses"),
        ({"secretIdUses": "1"}, "secretIdUses"),
        ({"secretIdUses": 1000}, "secretIdUses"),
        ({"secretIdTtl": "2d"}, "secretIdTtl"),
        ({"secretIdTtl": "soon"}, "secretIdTtl"),
    ],
)
def test_secret_id_bounds(fields, key):
    assert f"pgcreds:roles[0].{key}" in error_of(role(**fields))


def test_approle_path_token_is_refused_and_a_long_admin_prefix_with_rotate_root():
    assert "pgcreds:vaultAppRolePath" in error_of({"vaultAppRolePath": "token"})
    assert "pgcreds:vaultAppRolePath" in error_of({"vaultAppRolePath": "a b"})
    long_name = "v" * 60
    assert "pgcreds:vaultAdminRole" in error_of({"vaultAdminRole": long_name})
    assert parse({"vaultAdminRole": long_name, "vaultRotateRoot": "false"}).vault.connections[0].login == long_name


def test_aiven_api_url_is_no_longer_a_setting():
    message = error_of({**AIVEN, "aivenApiUrl": "http://127.0.0.1:9"}, environ=AIVEN_ENV)
    assert "pgcreds:aivenApiUrl" in message and "AIVEN_WEB_URL" in message


# A value every string setting may hold, to which a control character is then appended.
PLAIN_VALUES = {
    "aivenApiUrl": "x",
    "aivenProject": "my-project",
    "aivenCloud": "google-europe-west1",
    "aivenPlan": "startup-4",
    "aivenServiceName": "pg-x",
    "aivenPgVersion": "16",
    "aivenMaintenanceDow": "sunday",
    "aivenMaintenanceTime": "03:00:00",
    "aivenTerminationProtection": "true",
    "environment": "dev",
    "postgresMode": "existing",
    "postgresHost": "db.internal",
    "postgresPort": "5432",
    "postgresDatabase": "app",
    "postgresAdminUser": "pgcreds_deployer",
    "postgresSslMode": "require",
    "postgresSslRootCert": "/etc/ca.pem",
    "vaultSslRootCert": "/etc/openbao/ca.pem",
    "vaultAddress": "https://vault.internal:8200",
    "vaultMountPath": "database",
    "vaultConnectionName": "postgresql",
    "vaultRotateRoot": "true",
    "vaultAppRolePath": "database-approle",
    "tableOwnerRole": "app_owner",
    "vaultAdminRole": "vault_admin",
    "sampleData": "false",
    "keepTablesOnDestroy": "true",
    "stackKind": "all",
    "platformStack": "platform",
    "application": "billing",
}
ROLE_FIELDS = {
    "name": "metrics-readwrite",
    "access": "readwrite",
    "defaultTtl": "1h",
    "maxTtl": "24h",
    "usernameTemplate": '{{ printf "app_%s" (random 8) | truncate 63 }}',
    "secretIdTtl": "1h",
}
CONTROL_CHARACTERS = {"newline": "\n", "NUL": "\0", "tab": "\t"}


def test_every_string_setting_is_listed():
    from settings import KEYS

    assert set(PLAIN_VALUES) == set(KEYS) - {"roles"}


@pytest.mark.parametrize("character", CONTROL_CHARACTERS.values(), ids=CONTROL_CHARACTERS)
@pytest.mark.parametrize("key", PLAIN_VALUES)
def test_a_control_character_in_any_setting_is_refused_naming_it(key, character):
    message = error_of({key: PLAIN_VALUES[key] + character})
    assert f"pgcreds:{key}: " in message and "contains a control character" in message


@pytest.mark.parametrize("character", CONTROL_CHARACTERS.values(), ids=CONTROL_CHARACTERS)
@pytest.mark.parametrize("field", [*ROLE_FIELDS, "tables"])
def test_a_control_character_in_any_role_field_is_refused_naming_it(field, character):
    value = ["weekly_metrics_reporting" + character] if field == "tables" else ROLE_FIELDS[field] + character
    message = error_of(role(**{field: value}))
    assert f"pgcreds:roles[0].{field}: " in message and "contains a control character" in message


def test_a_trailing_newline_no_longer_passes_a_name_pattern():
    # The case: `$` matched before the newline, and the CLI then panicked on the URN.
    for raw in (role(name="metrics-nl\n"), {"tableOwnerRole": "app_owner\n"}, {"vaultConnectionName": "pg\n"}):
        with pytest.raises(SettingsError):
            parse(raw)


def test_aiven_token_stored_in_clear_is_refused():
    token = Output.secret("in-clear")
    message = error_of(
        AIVEN,
        environ={"VAULT_TOKEN": "t"},
        secret=lambda key: token if key == "aivenToken" else None,
        in_clear=lambda key: key == "aivenToken",
    )
    assert (
        "pgcreds:aivenToken: is no longer read" in message and "revoke the token that was written in clear" in message
    )


@pytest.mark.parametrize(
    "template",
    [
        'x"; DROP TABLE weekly_metrics_reporting; --{{ random 8 | truncate 63 }}',
        '{{ printf "a\'b_%s" (random 8) | truncate 63 }}',
        '{{ printf "v_%s" .DisplayName | truncate 63 }}',
        "{{ random 8 | base64 | truncate 63 }}",
        '{{ random 8 | replace "a" "$$" | truncate 63 }}',
        '{{ printf "%q" (random 8) | truncate 63 }}',
        '{{ define "x" }}{{ end }}{{ random 8 | truncate 63 }}',
        '{{ timestamp "2006-01-02 15:04" | truncate 63 }}',
    ],
)
def test_a_username_template_that_could_make_an_unsafe_name_is_refused(template):
    message = error_of(role(usernameTemplate=template))
    assert "pgcreds:roles[0].usernameTemplate" in message


@pytest.mark.parametrize(
    "template",
    [
        '{{ printf "rd_%s_%s" (random 10 | lowercase) (unix_time) | truncate 63 }}',
        "app-{{ .RoleName | truncate 20 }}-{{ uuid | truncate 63 }}",
        '{{ printf "m_%s_%s" (timestamp "20060102150405") (random 8) | sha256 | truncate 63 }}',
    ],
)
def test_a_username_template_that_makes_safe_names_is_accepted(template):
    roles = parse(role(usernameTemplate=template)).roles
    assert roles[0].username_template == template


def test_the_project_declares_the_same_default_roles_as_the_settings():
    """Pulumi.yaml's default lets a new stack preview with no setting; it is the settings' default."""
    from pathlib import Path

    import yaml

    from settings import DEFAULT_ROLES

    project = yaml.safe_load((Path(__file__).resolve().parents[2] / "Pulumi.yaml").read_text())
    assert project["config"]["roles"]["default"] == DEFAULT_ROLES


# --- the split layout: a platform stack, and one stack per application --------


def application(**raw):
    roles = [
        {
            "name": "billing-rw",
            "tables": ["billing_invoices"],
            "access": "readwrite",
            "defaultTtl": "1h",
            "maxTtl": "24h",
        }
    ]
    return {
        "stackKind": "application",
        "platformStack": "platform",
        "application": "billing",
        "tableOwnerRole": "billing_owner",
        "vaultAdminRole": "billing_vault_admin",
        "roles": roles,
        **raw,
    }


def test_the_default_stack_holds_the_whole_graph():
    settings = parse()
    assert settings.layout.kind == "all"
    assert {t.name for t in settings.tables} == {"weekly_metrics_reporting", "employee_salary"}


def test_a_platform_stack_has_no_roles_and_says_so_when_given_some():
    settings = parse({"stackKind": "platform", "roles": "[]"})
    assert (settings.roles, settings.tables, settings.vault.connections) == ((), (), ())
    message = error_of({"stackKind": "platform"})
    assert "roles: a platform stack issues no credentials: set pgcreds:roles to []" in message


def test_an_application_stack_names_its_connection_after_itself_and_makes_only_its_tables():
    settings = parse(application())
    assert settings.layout.platform_stack == "platform" and settings.layout.application == "billing"
    (connection,) = settings.vault.connections
    assert connection.name == "billing"
    assert settings.tables == ()  # billing_invoices is not in tables.py: it must exist (PgExistingTable)


@pytest.mark.parametrize(
    "raw, setting, words",
    [
        (
            {
                "roles": [
                    {
                        "name": "metrics-readwrite",
                        "tables": ["billing_invoices"],
                        "access": "read",
                        "defaultTtl": "1h",
                        "maxTtl": "24h",
                    }
                ]
            },
            "roles[0].name",
            "is not a name of the application 'billing': in its stack every role is named billing-",
        ),
        (
            {
                "roles": [
                    {
                        "name": "billing-rw",
                        "tables": ["weekly_metrics_reporting"],
                        "access": "read",
                        "defaultTtl": "1h",
                        "maxTtl": "24h",
                    }
                ]
            },
            "roles[0].tables",
            "'weekly_metrics_reporting' is not a table of the application 'billing'",
        ),
        ({"tableOwnerRole": "app_owner"}, "tableOwnerRole", "set it to billing_app_owner"),
        ({"vaultAdminRole": "vault_admin"}, "vaultAdminRole", "set it to billing_vault_admin"),
        ({"application": "bill-ing"}, "application", "is not an application name"),
        ({"application": ""}, "application", "is not an application name"),
        ({"platformStack": ""}, "platformStack", "does not name a stack"),
        ({"postgresMode": "aiven"}, "postgresMode", "is the platform stack's choice"),
    ],
)
def test_an_application_stack_refuses_names_that_are_not_its_own(raw, setting, words):
    message = error_of(application(**raw))
    assert f"pgcreds:{setting}" in message or f"{setting}:" in message
    assert words in message


@pytest.mark.parametrize("key", ["platformStack", "application"])
def test_application_settings_outside_an_application_stack_are_refused(key):
    assert "is read by application stacks only" in error_of({key: "billing"})


def test_an_unknown_stack_kind_is_refused():
    assert "stackKind: must be one of all, platform, application" in error_of({"stackKind": "apps"})


@pytest.mark.parametrize(
    "previous, per_table",
    [
        (None, False),  # a new stack
        ({}, False),
        ({"groupRoles": {"metrics-readwrite": "metrics_readwrite"}}, True),  # made by a version that granted per table
        ({"groupRoles": {}, "grantLayout": "per-role"}, False),
    ],
)
def test_grants_per_table_in_state_are_told_from_the_last_update_outputs(previous, per_table):
    settings = parse_settings({**BASE, **role()}, lambda key: None, ENV, "dev", previous_outputs=previous)
    assert settings.per_table_grants_in_state is per_table


@pytest.mark.parametrize("stack", ["platform", "billing", "staging", "dev"])
def test_the_example_stack_files_hold_valid_settings(stack):
    from pathlib import Path

    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parents[2] / f"Pulumi.{stack}.yaml").read_text())["config"]
    raw = {
        key.split(":", 1)[1]: value if isinstance(value, (str, list)) else json.dumps(value)
        for key, value in config.items()
    }
    raw = {key: json.dumps(value) if isinstance(value, list) else value for key, value in raw.items()}
    # The deploy session of the stack logs in as its admin (PGUSER).
    session = {**ENV, "VAULT_ADDR": "https://127.0.0.1:8200", "PGUSER": raw.get("postgresAdminUser", "postgres")}
    settings = parse_settings(raw, lambda key: None, session, stack)
    assert settings.layout.kind == {"platform": "platform", "billing": "application"}.get(stack, "all")


def test_a_last_update_whose_outputs_cannot_be_read_is_taken_to_hold_grants_per_table(monkeypatch):
    import pulumi

    import settings as settings_module

    calls = []

    def failing(token, args):
        calls.append(token)
        raise Exception("failed to load checkpoint: EOF")

    monkeypatch.setattr(pulumi.runtime, "invoke", failing)
    monkeypatch.setattr(settings_module.time, "sleep", lambda seconds: None)
    previous = settings_module.previous_outputs()
    assert calls == ["pulumi:pulumi:readStackOutputs"] * settings_module.PREVIOUS_OUTPUTS_ATTEMPTS
    assert parse_settings(
        {**BASE, **role()}, lambda key: None, ENV, "dev", previous_outputs=previous
    ).per_table_grants_in_state


@pytest.mark.parametrize("path", ["etc/ca.pem", "/etc/ca.pem&sslmode=disable", "/etc/my ca.pem", "/etc/ca?.pem"])
def test_vault_ca_path_must_be_a_plain_absolute_path(path):
    message = error_of({"vaultSslRootCert": path})
    assert "pgcreds:vaultSslRootCert" in message and "absolute path on Vault's host" in message


def test_vault_ca_path_reaches_the_aiven_and_existing_endpoints():
    assert parse({**AIVEN, "vaultSslRootCert": "/etc/a.pem"}, environ=AIVEN_ENV).postgres.vault_sslrootcert == (
        "/etc/a.pem"
    )
    assert parse({"vaultSslRootCert": "/etc/b.pem"}).postgres.vault_sslrootcert == "/etc/b.pem"
