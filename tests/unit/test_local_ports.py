"""The local servers' default ports lie below Linux's ephemeral range, and a data
folder keeps the ports it was made with (issue "No single mistake wedges a
stack", class 10)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EPHEMERAL = range(32768, 61000)


def ports(local_dir: Path, version: str = "15", **extra: str) -> tuple[int, int]:
    env = {"PATH": "/usr/bin:/bin", "PGCREDS_LOCAL_DIR": str(local_dir), "PGCREDS_PG_VERSION": version, **extra}
    out = subprocess.run(
        ["bash", "-c", f"source '{REPO}/local/common.sh'; echo $PGCREDS_PG_PORT $PGCREDS_BAO_PORT"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0]), int(out[1])


def test_new_servers_get_ports_outside_the_ephemeral_range(tmp_path: Path):
    for version in ("15", "18"):
        pg, bao = ports(tmp_path / version, version)
        assert pg not in EPHEMERAL and bao not in EPHEMERAL and bao + 1 not in EPHEMERAL  # (+1: raft's cluster port)
    assert ports(tmp_path / "new") == (15432, 18200)
    assert ports(tmp_path / "vault-new", PGCREDS_VAULT_SERVER="vault") == (15442, 18210)  # runs beside OpenBao's


def test_a_folder_holds_one_kind_of_vault_server(tmp_path: Path):
    (tmp_path / "openbao").mkdir()
    env = {"PATH": "/usr/bin:/bin", "PGCREDS_LOCAL_DIR": str(tmp_path), "PGCREDS_VAULT_SERVER": "vault"}
    refused = subprocess.run(
        ["bash", "-c", f"source '{REPO}/local/common.sh'"], env=env, capture_output=True, text=True
    )
    assert refused.returncode == 2
    assert f"PGCREDS_LOCAL_DIR={tmp_path} holds the servers of PGCREDS_VAULT_SERVER=openbao" in refused.stderr


def test_servers_made_by_an_earlier_version_keep_their_ports(tmp_path: Path):
    (tmp_path / "postgres").mkdir()
    (tmp_path / "openbao").mkdir()
    assert ports(tmp_path) == (55432, 58200)  # no port recorded: the earlier defaults
    (tmp_path / "postgres" / "port").write_text("15999\n")
    assert ports(tmp_path) == (15999, 58200)
    assert ports(tmp_path, PGCREDS_PG_PORT="16000", PGCREDS_BAO_PORT="17000") == (16000, 17000)
