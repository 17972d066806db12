"""The local Vault server (OpenBao, or HashiCorp Vault) is shaped like a production
one: no dev mode, raft storage, TLS that clients must verify, an audit device,
secrets in root-only files."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import hvac
import pytest
import requests

from stacks import vault

pytestmark = pytest.mark.both_servers  # and again on HashiCorp Vault (make test-vault)


def test_the_vault_server_runs_as_a_server_not_in_dev_mode():
    binary = "bao server" if os.environ["PGCREDS_VAULT_SERVER"] == "openbao" else "vault server"
    processes = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    ours = [line for line in processes.splitlines() if binary in line]
    assert ours and all(" -dev" not in line for line in ours), ours
    assert any(f"-config={os.environ['PGCREDS_VAULT_DIR']}/server.hcl" in line for line in ours), ours


def test_every_client_must_verify_the_tls_certificate():
    address = os.environ["VAULT_ADDR"]
    assert address.startswith("https://")
    with pytest.raises(requests.exceptions.SSLError):  # the system's CAs do not know the test CA
        hvac.Client(url=address, verify=True).sys.read_health_status(method="GET")
    health = hvac.Client(url=address, verify=os.environ["VAULT_CACERT"]).sys.read_health_status(method="GET")
    assert health["initialized"] and not health["sealed"] and not health.get("standby")


def test_raft_storage_audit_device_and_root_only_secrets():
    client = vault()
    servers = client.adapter.get("/v1/sys/storage/raft/configuration")["data"]["config"]["servers"]
    assert [s["node_id"] for s in servers] == ["local"] and servers[0]["leader"]
    assert client.sys.list_enabled_audit_devices()["data"]["file/"]["type"] == "file"
    audit_log = Path(os.environ["PGCREDS_BAO_AUDIT_LOG"])
    folder = audit_log.parent
    for secret in (folder / "root.token", folder / "unseal.key", audit_log):
        mode = stat.S_IMODE(secret.stat().st_mode)
        assert mode & 0o077 == 0 and secret.stat().st_uid == 0, (secret, oct(mode))


def test_everyday_token_is_a_named_operator_token_and_a_revoked_one_is_made_again():
    """`. local/dev-env.sh` exports the operator token, never the root token; a slip
    that revokes it (`bao token revoke -self`) costs that token alone, and the next
    `local/vault-server.sh start` (`make servers`) makes a new one."""
    import sourced_env as helpers

    folder = Path(os.environ["PGCREDS_BAO_AUDIT_LOG"]).parent
    root_token = (folder / "root.token").read_text().strip()
    assert os.environ["VAULT_TOKEN"] != root_token and os.environ["BAO_TOKEN"] != root_token
    looked_up = vault().auth.token.lookup_self()["data"]
    assert sorted(looked_up["policies"]) == ["default", "pgcreds-operator"] and looked_up["ttl"] > 0
    for never in ("sys/generate-root/attempt", "sys/raw/core", "sys/policies/acl/pgcreds-operator"):
        capabilities = vault().write("sys/capabilities-self", paths=[never])["data"][never]
        assert set(capabilities) <= {"deny", "read"}, (never, capabilities)

    # The user's slip, as they would type it.
    bao = str(Path(__file__).resolve().parents[2] / "venv/bin/bao")
    subprocess.run(
        [bao, "token", "revoke", "-self"], env={**os.environ, "VAULT_TOKEN": ""}, check=True, capture_output=True
    )
    with pytest.raises(hvac.exceptions.Forbidden):
        vault().auth.token.lookup_self()
    root = hvac.Client(url=os.environ["VAULT_ADDR"], token=root_token, verify=os.environ["VAULT_CACERT"])
    assert root.is_authenticated()  # the servers are whole

    subprocess.run([str(Path(__file__).resolve().parents[2] / "local/vault-server.sh"), "start"], check=True)
    helpers._local_vault.cache_clear()
    os.environ.update(helpers.sourced_env("local/dev-env.sh"))
    assert os.environ["VAULT_TOKEN"] != root_token
    assert sorted(vault().auth.token.lookup_self()["data"]["policies"]) == ["default", "pgcreds-operator"]
