"""pgcreds-client: PostgreSQL connections from Vault's short-lived credentials.

pool = connect_pool(vault_addr, role_id, secret_id, "database/creds/metrics-readwrite",
                    "auth/database-approle/login", "host=db.internal dbname=app sslmode=verify-full")
rows = pool.run(lambda conn: conn.execute("SELECT count(*) FROM weekly_metrics_reporting").fetchone())
"""

from pgcreds_client.credentials import Credential, CredentialSource, LoginRefused
from pgcreds_client.failover import VaultAddresses
from pgcreds_client.pool import RotatingPool, connect_pool

__all__ = ["Credential", "CredentialSource", "LoginRefused", "RotatingPool", "VaultAddresses", "connect_pool"]
