"""The local OpenBao is shaped like a production one: no dev mode, raft storage,
TLS that clients must verify, an audit device, secrets in root-only files."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import hvac
import pytest
import requests

from stacks import vault


def test_openbao_runs_as_a_server_not_in_dev_mode():
    processes = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    ours = [line for line in processes.splitlines() if "bao server" in line]
    assert ours and all(" -dev" not in line for line in ours), ours
    assert any(f"-config={os.environ['PGCREDS_LOCAL_DIR']}/openbao/server.hcl" in line for line in ours), ours


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
