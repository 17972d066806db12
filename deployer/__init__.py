"""The deploy path's own identity: what the one-time bootstrap makes (`bootstrap.py`)
and how a deployer, a person or CI, turns its Vault token into the short-lived
logins a Pulumi run needs (`session.py`). Nothing here is a Pulumi resource: the
bootstrap runs before the state backend and the secrets provider exist (it makes
them), and what it is handed (the server's admin password) must never be recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

# Vault: the database secrets engine that holds the deployer's own logins (apart from
# the applications' mount, which the program manages), and the transit engine that
# encrypts each stack's secrets (the `hashivault://` secrets provider uses `transit`).
PLATFORM_MOUNT = "pgcreds-platform"
PLATFORM_CONNECTION = "postgres-admin"
TRANSIT_MOUNT = "transit"
JWT_MOUNT = "jwt"
# A KV (version 2) engine with the Aiven API's long-lived token (`<mount>/api`: token,
# api_url), which only the deploy policies may read: each run mints a short one from it.
AIVEN_MOUNT = "pgcreds-aiven"
AIVEN_SECRET = "api"
# PostgreSQL: the deployer's login (rotated by Vault), the login Vault uses to manage
# it and the state users, and the state database with its owner and group roles.
DEPLOYER_ROLE = "deployer"  # <mount>/static-creds/deployer
DEPLOYER_LOGIN = "pgcreds_deployer"
PLATFORM_LOGIN = "pgcreds_vault_platform"
STATE_DATABASE = "pulumi_state"
STATE_TABLE = "pulumi_state"
STATE_OWNER = "pulumi_state_owner"
STATE_WRITE_ROLE = "state-write"  # <mount>/creds/state-write: preview, up, destroy
STATE_READ_ROLE = "state-read"  # <mount>/creds/state-read: pull-request previews
PREVIEW_ROLE = "preview"  # <mount>/creds/preview: a preview's PostgreSQL login (catalogs only)
STATE_WRITERS = "pulumi_state_writers"
STATE_READERS = "pulumi_state_readers"


# Mounts a stack's deploy policy must never be able to mount over or unmount.
RESERVED_MOUNTS = frozenset(
    {PLATFORM_MOUNT, TRANSIT_MOUNT, JWT_MOUNT, AIVEN_MOUNT, "sys", "auth", "identity", "cubbyhole", "secret", "kv"}
)


def application_login(application: str) -> str:
    """An application stack's own PostgreSQL login to deploy with: it manages its
    application's roles and tables, never another's (PostgreSQL 16 and later)."""
    return f"pgcreds_deploy_{application}"


def deployer_role(application: str = "") -> str:
    """The static role (<platform mount>/static-creds/<it>) of a stack's deploy login."""
    return f"{DEPLOYER_ROLE}-{application}" if application else DEPLOYER_ROLE


def stack_deployer_role(stack: str) -> str:
    """The static role of a single stack's deploy login on the Aiven service it made,
    once `make bootstrap --aiven-stack` handed the service over."""
    return f"{DEPLOYER_ROLE}-stack-{stack}"


def deploy_login(application: str = "") -> str:
    """The PostgreSQL login a stack deploys as: the deployer's, or its application's own."""
    return application_login(application) if application else DEPLOYER_LOGIN


def transit_key(stack: str) -> str:
    """The transit key that encrypts one stack's secrets."""
    return f"pgcreds-{stack}"


def secrets_provider(stack: str) -> str:
    """The `--secrets-provider` of a stack."""
    return f"hashivault://{transit_key(stack)}"


@dataclass(frozen=True)
class StateServer:
    """Where the state database is; its logins come from Vault."""

    host: str
    port: int
    sslmode: str = "verify-full"
    sslrootcert: str = ""

    def backend_url(self) -> str:
        """The `postgres://` backend URL: no user and no password (the deploy
        session adds its state login's name; the password is in PGPASSFILE)."""
        query = f"sslmode={self.sslmode}" + (f"&sslrootcert={self.sslrootcert}" if self.sslrootcert else "")
        return f"postgres://{self.host}:{self.port}/{STATE_DATABASE}?{query}"
