"""An application role: the value type shared by AccessRoles and VaultDatabaseSecrets."""

from __future__ import annotations

from dataclasses import dataclass

# Table privileges and sequence privileges per access level. A `migrate` role holds
# none of its own: its users act as the table owner role (see `acts_as_owner`).
TABLE_PRIVILEGES = {
    "read": ("SELECT",),
    "readwrite": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "migrate": (),
}
SEQUENCE_PRIVILEGES = {
    "read": (),
    "readwrite": ("USAGE", "SELECT"),
    "migrate": (),
}


@dataclass(frozen=True)
class AppRole:
    name: str
    """Vault role name; credentials are read at `<mount>/creds/<name>`."""
    tables: tuple[str, ...]
    """Tables the role's users may use."""
    access: str
    """`read` (SELECT), `readwrite` (SELECT, INSERT, UPDATE, DELETE and sequence USAGE)
    or `migrate` (schema migrations: its users' sessions run as the table owner role)."""
    default_ttl_seconds: int
    """Lifetime of a credential unless renewed."""
    max_ttl_seconds: int
    """Lifetime a credential can never outlive."""
    username_template: str | None = None
    """Vault username_template for this role's users; None keeps Vault's default."""
    locked: bool = False
    """Break-glass: Vault keeps the role but issues no new credentials for it."""
    secret_id_ttl_seconds: int = 3600
    """How long an AppRole secret-id for this role can be used to log in."""
    secret_id_uses: int = 1
    """How many logins one secret-id allows."""

    @property
    def group_role(self) -> str:
        """The NOLOGIN PostgreSQL group that holds the role's grants."""
        return self.name.replace("-", "_")

    @property
    def acts_as_owner(self) -> bool:
        """A migration role: its group is a member of the table owner role, and each
        user's sessions start with SET ROLE to it, so what a migration creates is
        owned by the owner role and outlives the user."""
        return self.access == "migrate"

    @property
    def table_privileges(self) -> tuple[str, ...]:
        return TABLE_PRIVILEGES[self.access]

    @property
    def sequence_privileges(self) -> tuple[str, ...]:
        return SEQUENCE_PRIVILEGES[self.access]
