"""Where HashiCorp Vault and OpenBao differ, the program finds out which one it
talks to and takes the better path on each; each difference is tested on both
(`make test` runs this module on OpenBao, and again on HashiCorp Vault).

Measured here (HashiCorp Vault 1.21.4, OpenBao 2.7.2): the PostgreSQL plugin's
`tls_ca` is enforced by Vault with verify-full and ignored by OpenBao, which
verifies only against a CA file named by the URL's sslrootcert (a file that must
then exist on Vault's host)."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import hvac.exceptions
import pytest
from psycopg import sql

from preflight import vault_server
from stacks import ProgramStack, admin_connect, vault

pytestmark = pytest.mark.both_servers  # and again on HashiCorp Vault (make test-vault)

SERVER = os.environ.get("PGCREDS_VAULT_SERVER", "openbao")


def test_the_program_tells_the_servers_apart_by_their_health_answer():
    health = vault().sys.read_health_status(method="GET")
    detected = vault_server(health)
    assert detected.kind == SERVER
    assert detected.version == ("1.21.4" if SERVER == "vault" else "2.7.2")
    assert detected.verifies_tls_ca == (SERVER == "vault")


@pytest.fixture
def probe_mount() -> str:
    client, mount = vault(), f"probe-{secrets.token_hex(3)}"
    client.sys.enable_secrets_engine("database", path=mount)
    yield mount
    client.sys.disable_secrets_engine(mount)


def probe(mount: str, *, tls_ca: str, url_ca: str = "") -> str:
    """Writes a connection that Vault verifies at once, with a login that does not
    exist: past the TLS handshake the server refuses the password, before it the
    certificate is the error. Returns Vault's error."""
    port = os.environ["PGPORT"]
    url = f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{port}/postgres?sslmode=verify-full" + (
        f"&sslrootcert={url_ca}" if url_ca else ""
    )
    with pytest.raises(hvac.exceptions.VaultError) as refused:
        vault().write(
            f"{mount}/config/probe",
            plugin_name="postgresql-database-plugin",
            connection_url=url,
            username="nobody_here",
            password="not-a-password",
            tls_ca=tls_ca,
            verify_connection=True,
        )
    return str(refused.value)


def other_ca(folder: Path) -> str:
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other",
            "-keyout",
            str(folder / "other.key"),
            "-out",
            str(folder / "other.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return (folder / "other.pem").read_text()


def test_tls_ca_is_enforced_by_hashicorp_vault_and_ignored_by_openbao(probe_mount: str, tmp_path: Path):
    if os.environ.get("PGCREDS_PG_SSLMODE") != "verify-full":
        pytest.fail("the local PostgreSQL 15 serves TLS (PGCREDS_PG_SSLMODE=verify-full); this one does not")
    test_ca = Path(os.environ["PGCREDS_TEST_CA"]).read_text()
    with_the_ca, with_another = probe(probe_mount, tls_ca=test_ca), probe(probe_mount, tls_ca=other_ca(tmp_path))
    if SERVER == "vault":
        assert 'password authentication failed for user "nobody_here"' in with_the_ca  # TLS verified, then refused
        assert "x509: certificate signed by unknown authority" in with_another
    else:
        # OpenBao ignores tls_ca: verify-full then has only the system's CAs.
        assert "x509: certificate signed by unknown authority" in with_the_ca
        assert "x509: certificate signed by unknown authority" in with_another
        # What it verifies with instead: a CA file on its host, named in the URL.
        url_file = probe(probe_mount, tls_ca="", url_ca=os.environ["PGCREDS_TEST_CA"])
        assert 'password authentication failed for user "nobody_here"' in url_file


def test_a_verify_full_stack_gives_each_server_the_ca_its_way(new_stack: ProgramStack):
    new_stack.set(postgresSslMode="verify-full", postgresSslRootCert=os.environ["PGCREDS_TEST_CA"])
    new_stack.stack.up()
    connection = vault().read(f"{new_stack.mount}/config/postgresql")["data"]["connection_details"]
    if SERVER == "vault":
        assert "sslmode=verify-full" in connection["connection_url"]
        assert "sslrootcert" not in connection["connection_url"]  # no file on Vault's host needed
    else:
        assert f"sslrootcert={os.environ['PGCREDS_TEST_CA']}" in connection["connection_url"]
    assert new_stack.smoke_check().passed
    assert set(new_stack.stack.up().summary.resource_changes) == {"same"}


def test_a_rotation_schedule_for_static_roles_on_vault_only(probe_mount: str):
    """The program uses rotation_period on both (the deploy session rotates a password
    about to change before a run, so a fixed-time schedule would add nothing); this
    keeps the README's table of differences honest."""
    superuser_password = Path(os.environ["PGCREDS_SUPERUSER_PASSWORD_FILE"]).read_text().strip()
    client, login = vault(), f"probe_{secrets.token_hex(3)}"
    with admin_connect() as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(login)))
    try:
        client.write(
            f"{probe_mount}/config/pg",
            plugin_name="postgresql-database-plugin",
            allowed_roles="*",
            connection_url=f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{os.environ['PGPORT']}"
            "/postgres?sslmode=require",
            username="postgres",
            password=superuser_password,
        )
        scheduled = dict(db_name="pg", username=login, rotation_schedule="0 3 * * *", rotation_window=3600)
        if SERVER == "vault":
            client.write(f"{probe_mount}/static-roles/s", **scheduled)
            assert client.read(f"{probe_mount}/static-roles/s")["data"]["rotation_schedule"] == "0 3 * * *"
        else:
            with pytest.raises(hvac.exceptions.InvalidRequest, match="rotation_period is required"):
                client.write(f"{probe_mount}/static-roles/s", **scheduled)
        client.write(f"{probe_mount}/static-roles/p", db_name="pg", username=login, rotation_period=3600)
        assert client.read(f"{probe_mount}/static-roles/p")["data"]["rotation_period"] == 3600
        for role in ("s", "p"):
            client.delete(f"{probe_mount}/static-roles/{role}")
    finally:
        with admin_connect() as admin:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(login)))
