import sys
from pathlib import Path

# The program's modules (settings, components, providers) live at the repository root.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# pgcreds-client, from its folder (an application installs it: `pip install ./client`).
sys.path.insert(0, str(REPO / "client"))


def pytest_configure(config) -> None:
    # `make test` runs these a second time on HashiCorp Vault (PGCREDS_VAULT_SERVER=vault):
    # what touches Vault's behaviour, chosen so that the suite stays under 30 minutes.
    config.addinivalue_line("markers", "both_servers: runs on OpenBao and again on HashiCorp Vault")
    # Run once, in the HashiCorp Vault half (which runs beside the main one and is the
    # shorter): the Aiven tests whose subject does not differ between the two servers.
    config.addinivalue_line("markers", "vault_half: runs on HashiCorp Vault only, in make test-vault")
    # Too long for the main suite: `make test-long` (timed in the closing notes).
    config.addinivalue_line("markers", "long: runs in make test-long only")
