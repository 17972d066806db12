"""The Aiven stack end to end on `pulumi_aiven`, with the real engine and the real
`aiven` plugin, against a local stand-in of the Aiven REST API (AIVEN_WEB_URL)
whose services are real databases on the local PostgreSQL server (TLS with a
test CA: Pulumi's connections use verify-full).

Every wait of the plugin takes about 30 s whatever the API answers (it wants 5
ready answers in a row), so one stack is created once and taken through its
life by the tests of this module, in order."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pulumi import automation as auto

from aiven_standin.server import AivenStandIn
from clients import aiven_api
from stacks import (
    PROJECT,
    ProgramStack,
    admin_connect,
    cleanup,
    make_stack,
    start_stand_in,
    stop_stand_in,
    to_aiven,
    vault,
)

SERVICE = "aiven-postgres-service"

# The module runs once, in the HashiCorp Vault half (`make test-vault`, beside the main
# run): what it tests is the aiven plugin against the stand-in, the same with either
# server; where Vault's side differs (the CA: tls_ca here, a file on OpenBao) it says
# which, and test_aiven_split runs on both.
pytestmark = pytest.mark.vault_half


def steps_of(events: list) -> dict[str, set[str]]:
    """Resource name -> the operations a preview or update planned for it."""
    steps: dict[str, set[str]] = {}
    for event in events:
        if event.resource_pre_event:
            step = event.resource_pre_event.metadata
            steps.setdefault(step.urn.split("::")[-1], set()).add(str(step.op.value))
    return steps


@pytest.fixture(scope="module")
def minted(stand_in: AivenStandIn) -> Iterator[aiven_api.MintedToken]:
    """The stack's runs use a short-lived token minted from the long-lived one, as a
    deploy session mints it (test_aiven_deploy_path runs the session itself)."""
    token = aiven_api.mint_token(stand_in.url, stand_in.token, "test_aiven")
    yield token
    aiven_api.revoke_token(stand_in.url, token.full_token, token.prefix)
    with pytest.raises(aiven_api.AivenApiError, match="Invalid token"):
        aiven_api.check_token(stand_in.url, token.full_token)


@pytest.fixture(scope="module")
def aiven_stack(
    tmp_path_factory: pytest.TempPathFactory, stand_in: AivenStandIn, minted: aiven_api.MintedToken
) -> Iterator[ProgramStack]:
    test_stack = make_stack(
        tmp_path_factory.mktemp("aiven"), env={"AIVEN_WEB_URL": stand_in.url, "AIVEN_TOKEN": minted.full_token}
    )
    # Vault's connection verifies the service: the project's CA is a file on Vault's host (OpenBao).
    to_aiven(test_stack, vaultSslRootCert=os.environ["PGCREDS_TEST_CA"])
    yield test_stack
    cleanup(test_stack)


def test_1_up_from_empty_then_smoke_check_over_verify_full(aiven_stack: ProgramStack, stand_in: AivenStandIn):
    started = time.monotonic()
    aiven_stack.stack.up()
    print(f"\ncold up of the Aiven stack against the stand-in: {time.monotonic() - started:.1f} s")
    assert stand_in.unknown == []
    (service,) = stand_in.services.values()
    assert (service.name, service.plan, service.cloud) == (
        f"pg-{aiven_stack.suffix}",
        "startup-4",
        "google-europe-west1",
    )
    assert service.user_config["pg_version"] == "16" and service.maintenance["dow"] == "sunday"
    assert service.termination_protection is False  # the test stack's environment is dev
    assert "aiven:index/pg:Pg" in aiven_stack.resource_types()
    assert not any("dynamic" in kind and "Aiven" in kind for kind in aiven_stack.resource_types())

    outputs = aiven_stack.outputs()
    assert (
        outputs["postgres"]["sslmode"] == "verify-full"
        and "BEGIN CERTIFICATE" in outputs["postgres"]["sslrootcert_pem"]
    )
    assert (
        outputs["postgres"]["adminUser"] == service.admin_user and outputs["postgres"]["database"] == service.database
    )
    report = aiven_stack.smoke_check(admin_password=service.admin_password)
    assert report.passed, report.table()
    # Vault logs in as its own login over TLS, never as the service's admin.
    connection = vault().secrets.database.read_connection("postgresql", mount_point=aiven_stack.mount)["data"]
    assert [connection["connection_details"]["username"]] == aiven_stack.vault_logins()
    url = connection["connection_details"]["connection_url"]
    if os.environ.get("PGCREDS_VAULT_SERVER") == "vault":  # the project's CA in the connection's tls_ca
        assert url.endswith("sslmode=verify-full") and "BEGIN CERTIFICATE" in connection["connection_details"].get(
            "tls_ca", ""
        ), connection["connection_details"]
    else:  # OpenBao: the CA's file on its host
        assert url.endswith(f"sslmode=verify-full&sslrootcert={os.environ['PGCREDS_TEST_CA']}"), url
    state = aiven_stack.raw_state()
    stack_file = (aiven_stack.project_dir / f"Pulumi.{aiven_stack.stack.name}.yaml").read_text()
    for secret in (service.admin_password, stand_in.token, *stand_in.access_tokens):
        assert secret not in state and secret not in stack_file
    # Every call of the plugin used the run's minted token, never the long-lived one.
    assert stand_in.calls_by("long-lived") == []


def test_2_no_op_preview(aiven_stack: ProgramStack, stand_in: AivenStandIn):
    posts = len(stand_in.calls("POST"))
    assert set(aiven_stack.stack.preview(refresh=True).change_summary) == {"same"}
    assert len(stand_in.calls("POST")) == posts and stand_in.unknown == []


def test_3_a_plan_change_is_an_update_not_a_replacement(aiven_stack: ProgramStack, stand_in: AivenStandIn):
    aiven_stack.set(aivenPlan="startup-8")
    events: list = []
    aiven_stack.stack.preview(on_event=events.append)
    steps = steps_of(events)
    assert steps[SERVICE] == {"update"}, steps
    assert not any("replace" in ops or "create-replacement" in ops for ops in steps.values()), steps
    (service,) = stand_in.services.values()
    assert service.plan == "startup-4"  # a preview changes nothing

    result = aiven_stack.stack.up()
    assert result.summary.resource_changes == {"same": result.summary.resource_changes["same"], "update": 1}
    assert service.plan == "startup-8" and stand_in.services[service.name] is service
    (put,) = [body for method, path, body in stand_in.bodies if method == "PUT" and path.endswith(service.name)]
    assert put["plan"] == "startup-8" and put["user_config"]["pg_version"] == "16"


def test_4_destroy_is_refused_while_termination_protection_is_on(aiven_stack: ProgramStack, stand_in: AivenStandIn):
    aiven_stack.set(aivenTerminationProtection="true")
    aiven_stack.stack.up()
    (service,) = stand_in.services.values()
    assert service.termination_protection is True
    count = aiven_stack.resource_count()
    with pytest.raises(auto.CommandError) as refused:
        aiven_stack.stack.destroy()
    message = str(refused.value)
    print(
        "\n`pulumi destroy` with termination protection on ends with:\n"
        + message[message.find("TerminationProtected:") :][:400]
    )
    assert "has termination protection" in message and "pgcreds:aivenTerminationProtection false" in message
    # Refused before anything was deleted: the whole stack still works.
    assert aiven_stack.resource_count() == count and stand_in.services == {service.name: service}
    assert not stand_in.calls("DELETE")
    assert aiven_stack.smoke_check(admin_password=service.admin_password).passed


def test_5_aiven_itself_refuses_to_delete_a_protected_service(aiven_stack: ProgramStack, stand_in: AivenStandIn):
    """The second layer, and why the guard is needed: without it, `pulumi destroy`
    deletes everything that depends on the service, then the plugin's DELETE gets
    Aiven's 403 and the service stays."""
    guard = next(
        r["urn"]
        for r in aiven_stack.stack.export_stack().deployment["resources"]
        if r["urn"].endswith("::aiven-postgres-termination-guard")
    )
    aiven_stack.run("state", "delete", guard, "--yes")
    with pytest.raises(auto.CommandError) as refused:
        aiven_stack.stack.destroy()
    message = str(refused.value)
    print(
        "\n`pulumi destroy` without the guard, Aiven's termination protection on:\n"
        + message[message.find("error:") :][:400]
    )
    assert "[403 ServiceDelete]: Service is protected against termination and shutdown" in message
    (delete,) = stand_in.calls("DELETE")
    left = aiven_stack.resource_types()
    # The service stays; what was built on it (roles, grants, tables, the Vault connection) is gone.
    assert len(stand_in.services) == 1 and "aiven:index/pg:Pg" in left
    assert not {
        kind for kind in left if kind.startswith("postgresql:") or "Table" in kind or "secretBackendConnection" in kind
    }, left


def test_6_destroy_once_the_setting_is_off_leaves_nothing(aiven_stack: ProgramStack, stand_in: AivenStandIn):
    aiven_stack.set(aivenTerminationProtection="false")
    aiven_stack.stack.up()  # and what test 5's destroy removed is made again
    (service,) = stand_in.services.values()
    assert service.termination_protection is False
    assert aiven_stack.smoke_check(admin_password=service.admin_password).passed
    leases = [
        vault().secrets.database.generate_credentials(aiven_stack.role_name, mount_point=aiven_stack.mount)
        for _ in range(3)
    ]
    aiven_stack.stack.destroy()
    assert stand_in.services == {} and stand_in.unknown == []
    users = [lease["data"]["username"] for lease in leases] + aiven_stack.program_roles + [service.admin_user]
    with admin_connect() as admin:
        assert admin.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (users,)).fetchall() == []
        assert admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (service.database,)).fetchall() == []
    assert f"{aiven_stack.mount}/" not in vault().sys.list_mounted_secrets_engines()["data"]
    calls = sorted(
        {
            f"{method} {path.replace(service.name, '{service}').replace(PROJECT, '{project}')}"
            for method, path in stand_in.requests
        }
    )
    print("\nevery API call of the cycle (distinct):\n  " + "\n  ".join(calls))


@pytest.mark.parametrize(
    "overrides,setting",
    [
        ({"aivenPlan": "startup-999"}, "pgcreds:aivenPlan"),
        ({"aivenCloud": "Google Europe"}, "pgcreds:aivenCloud"),
        ({"aivenMaintenanceTime": "25:00:00"}, "pgcreds:aivenMaintenanceTime"),
        ({"AIVEN_TOKEN": ""}, "pgcreds:aivenToken: no Aiven API token"),
        ({"aivenToken": "secret"}, "pgcreds:aivenToken: is no longer read"),
    ],
)
def test_bad_aiven_settings_fail_at_preview_and_create_nothing(tmp_path: Path, overrides: dict, setting: str):
    server = start_stand_in()
    token = overrides.pop("AIVEN_TOKEN", server.token)
    test_stack = make_stack(tmp_path, env={"AIVEN_WEB_URL": server.url, "AIVEN_TOKEN": token})
    try:
        if overrides.pop("aivenToken", None):
            # A long-lived token in the stack's settings (and state) is refused, with the way into Vault.
            test_stack.stack.set_config("pgcreds:aivenToken", auto.ConfigValue(server.token, secret=True))
        to_aiven(test_stack, **overrides)
        with pytest.raises(auto.CommandError) as failed:
            test_stack.stack.preview()
        assert setting in str(failed.value)
        if "no longer read" in setting:
            assert "--aiven-token-file" in str(failed.value) and "pulumi config rm pgcreds:aivenToken" in str(
                failed.value
            )
        assert not server.calls("POST") and not server.calls("PUT") and server.services == {}
    finally:
        cleanup(test_stack)
        stop_stand_in(server)


def test_aiven_token_from_the_environment_is_in_no_state(tmp_path: Path):
    """AIVEN_TOKEN instead of the secret setting: a preview reaches the API
    (project, CA, plans) and the token is nowhere in the stack's files."""
    server = start_stand_in()
    test_stack = make_stack(tmp_path, env={"AIVEN_WEB_URL": server.url, "AIVEN_TOKEN": server.token})
    try:
        to_aiven(test_stack)
        assert test_stack.stack.preview().change_summary.get("create", 0) > 10
        assert server.calls("GET", "/service-types/pg/plans") and server.unknown == []
        assert server.token not in (test_stack.project_dir / f"Pulumi.{test_stack.stack.name}.yaml").read_text()
    finally:
        cleanup(test_stack)
        stop_stand_in(server)


def test_switching_to_aiven_shows_the_replacement(new_stack: ProgramStack):
    server = start_stand_in()
    try:
        new_stack.set(sampleData="false")
        new_stack.stack.up()
        new_stack.stack.workspace.env_vars.update(AIVEN_WEB_URL=server.url, AIVEN_TOKEN=server.token)
        to_aiven(new_stack)
        events: list = []
        summary = new_stack.stack.preview(on_event=events.append).change_summary
        steps = steps_of(events)
        # Every PostgreSQL object moves to the new server: replaced, not silently updated.
        postgres_steps = {
            name: ops
            for name, ops in steps.items()
            if name.startswith(("access-roles-", "app-schema-")) and not name.endswith(("-claim", "-password"))
        }
        assert postgres_steps and all("replace" in ops for ops in postgres_steps.values()), steps
        assert steps[SERVICE] == {"create"} and steps["postgres"] == {"delete"}
        assert steps["vault-database-secrets-connection"] == {"update"}  # its connection_url changes
        # The login is new on the new server: its first password is sent again, and rotated again.
        assert "replace" in steps["vault-database-secrets-rotate-root"]
        assert summary["replace"] >= len(postgres_steps)
        assert server.services == {}  # a preview creates nothing
    finally:
        stop_stand_in(server)


@pytest.mark.parametrize("fault,answer", [("token", "Invalid token"), ("project", "Project does not exist")])
def test_api_errors_reach_the_user_in_aivens_words(tmp_path: Path, fault: str, answer: str):
    """A bad token or an unknown project: the preview fails with Aiven's own
    message (its JSON error shape, as the plugin reports it) and creates nothing."""
    server = start_stand_in()
    test_stack = make_stack(
        tmp_path, env={"AIVEN_WEB_URL": server.url, "AIVEN_TOKEN": "wrong-token" if fault == "token" else server.token}
    )
    try:
        to_aiven(test_stack, **({"aivenProject": "no-such-project"} if fault == "project" else {}))
        with pytest.raises(auto.CommandError) as failed:
            test_stack.stack.preview()
        assert answer in str(failed.value)
        assert not server.calls("POST") and server.services == {} and server.unknown == []
    finally:
        cleanup(test_stack)
        stop_stand_in(server)


@contextlib.contextmanager
def forwarder(listen_host: str, to_port: int) -> Iterator[int]:
    """Connections to `listen_host`:<the port it yields> are passed on to the local
    server: the same server, reached by a name its certificate does not hold."""
    listener = socket.create_server((listen_host, 0))

    def pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                server = socket.create_connection(("127.0.0.1", to_port))
                for a, b in ((client, server), (server, client)):
                    threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_a_server_certificate_for_another_host_name_is_refused_at_up(tmp_path: Path):
    """The service answers at 127.0.0.2, a name its certificate (127.0.0.1, localhost)
    does not hold: `up` creates the service, then stops before anything on it, naming
    Vault's connection and the CA."""
    with forwarder("127.0.0.2", int(os.environ["PGPORT"])) as port:
        server = start_stand_in(pg_host="127.0.0.2", pg_port=port)
        token = aiven_api.mint_token(server.url, server.token, "tls test")
        test_stack = make_stack(tmp_path, env={"AIVEN_WEB_URL": server.url, "AIVEN_TOKEN": token.full_token})
        try:
            to_aiven(test_stack, vaultSslRootCert=os.environ["PGCREDS_TEST_CA"])
            with pytest.raises(auto.CommandError) as refused:
                test_stack.stack.up()
            message = str(refused.value)
            print("\n`pulumi up` against a certificate for another host:\n" + message[message.find("error:") :][:700])
            assert f"at 127.0.0.2:{port} presents a certificate that verify-full refuses" in message
            assert f"the CA of the Aiven project {PROJECT!r}" in message and os.environ["PGCREDS_TEST_CA"] in message
            assert f"Vault's connection {test_stack.mount}/config/" in message
            assert "Hostname mismatch" in message or "not valid for" in message
            # Nothing on the server but the service itself: no role of the stack, no Vault connection.
            (service,) = server.services.values()
            with admin_connect() as admin:
                made = admin.execute(
                    "SELECT rolname FROM pg_roles WHERE rolname LIKE %s AND rolname <> %s",
                    (f"%{test_stack.suffix}%", service.admin_user),
                ).fetchall()
            assert made == []
            assert not any("secretBackendConnection" in kind for kind in test_stack.resource_types())
        finally:
            cleanup(test_stack)
            stop_stand_in(server)
