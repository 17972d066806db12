"""Which Vault connections the program makes, and which PostgreSQL login each
one uses: the plan that AccessRoles (creates the logins) and
VaultDatabaseSecrets (configures the connections) share."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from components.app_role import AppRole

# Every accepted template's names start with a literal prefix; the drift audit finds
# this program's users by it. Vault's own default starts with the caller's
# display name (any character), so the program sets this one instead.
DEFAULT_USERNAME_TEMPLATE = '{{ printf "v-%s-%s-%s" (.RoleName | truncate 24) (random 20) (unix_time) | truncate 63 }}'

# Room for "_" and the digest in PostgreSQL's 63-byte names.
LOGIN_DIGEST_LENGTH = 6
LOGIN_PREFIX_MAX = 63 - 1 - LOGIN_DIGEST_LENGTH


@dataclass(frozen=True)
class VaultConnection:
    name: str
    """Name in Vault: `<mount>/config/<name>`."""
    username_template: str | None
    """Vault keeps username_template on the connection, so each template has one."""
    roles: tuple[AppRole, ...]
    """The roles it issues credentials for."""
    login: str
    """The PostgreSQL login Vault uses on it."""

    @property
    def allowed_roles(self) -> list[str]:
        """A locked role keeps its Vault role (and its leases stay revocable)
        but the connection no longer issues credentials for it."""
        return sorted(r.name for r in self.roles if not r.locked)


def rotated_login(prefix: str, mount_path: str, connection_name: str) -> str:
    """Once Vault rotates a login's password, only that connection knows it. So a
    connection that rotates has a login of its own, named after where it lives:
    a new mount path or connection name is a new login with a fresh password,
    while the old connection (and its leases) keeps working until it is removed."""
    digest = hashlib.sha256(f"{mount_path}/config/{connection_name}".encode()).hexdigest()
    return f"{prefix}_{digest[:LOGIN_DIGEST_LENGTH]}"


def plan_connections(
    roles: tuple[AppRole, ...], *, mount_path: str, connection_name: str, admin_role: str, rotate_root: bool
) -> tuple[VaultConnection, ...]:
    """One connection for the roles with Vault's default username template, one more
    per distinct template (named after its first role). Without rotate-root every
    connection logs in as `admin_role`, whose password the state keeps."""
    connections = []
    for template in dict.fromkeys(r.username_template for r in roles):
        members = tuple(sorted((r for r in roles if r.username_template == template), key=lambda r: r.name))
        name = connection_name if template is None else f"{connection_name}-{members[0].name}"
        login = rotated_login(admin_role, mount_path, name) if rotate_root else admin_role
        connections.append(VaultConnection(name=name, username_template=template, roles=members, login=login))
    return tuple(connections)


def username_prefix(template: str | None, role_name: str) -> str:
    """The literal text every name from `template` starts with, for the role
    `role_name` (the default's: 'v-<role name, cut at 24>-')."""
    if template is None:
        return f"v-{role_name[:24]}-"
    literal = template.split("{{", 1)[0]
    if literal:
        return literal
    printf = re.match(r'\{\{\s*printf\s+"([^"%]*)', template)
    return printf.group(1) if printf else ""
