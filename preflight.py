"""The logins the program will use, tried once before any resource is registered:
Vault's address, certificate, seal and token, and the PostgreSQL admin login. A
login that does not work stops the preview (and `up`) here, naming the setting
or the environment variable and the fix; nothing is changed and nothing is
recorded. What cannot be reached at all is left to the providers, whose
messages name the address (and `up` creates what does not need it first).
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass

import pulumi

from clients.tls import vault_ca_problem
from components.aiven_postgres import AivenPostgresArgs
from settings import Settings

TIMEOUT_SECONDS = 5
# Words in libpq's message when the server answered and refused the login (not
# when it could not be reached).
LOGIN_REFUSED = ("authentication failed", "no password supplied", "does not exist", "pg_hba.conf")


class LoginRefused(pulumi.RunError):
    """A login the program needs does not work (reported without a traceback)."""


def vault_tls_context() -> ssl.SSLContext | None:
    """The TLS context every call to Vault uses: VAULT_CACERT's CA, which must exist."""
    problem = vault_ca_problem()
    if problem:
        raise LoginRefused(f"{problem}. Nothing was changed.")
    return ssl.create_default_context(cafile=os.environ.get("VAULT_CACERT") or None)


def _vault_call(
    address: str, path: str, context: ssl.SSLContext | None, token: str | None = None, body: dict | None = None
) -> tuple[int, dict]:
    """(HTTP status, JSON answer) of one Vault API call."""
    request = urllib.request.Request(
        f"{address}/v1/{path}",
        method="POST" if body is not None else "GET",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"X-Vault-Token": token} if token else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS, context=context) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as answer:
        try:
            return answer.code, json.loads(answer.read() or b"{}")
        except ValueError:
            return answer.code, {}


def required_vault_capabilities(settings: Settings, dry_run: bool) -> dict[str, str]:
    """One path per kind of object the program touches, and the capability it
    needs there: read for a preview, write for `up` (and `destroy`)."""
    mount, auth = settings.vault.mount_path, settings.vault.approle_path
    write = "read" if dry_run else "update"
    needed = {"auth/token/create": "update", "sys/mounts": "read"}
    if settings.layout.kind != "application":  # an application stack uses the platform's mounts
        needed.update({f"sys/mounts/{mount}": write, f"sys/mounts/auth/{auth}": "read"})
    for connection in settings.vault.connections:
        needed[f"{mount}/config/{connection.name}"] = write
    for role in settings.roles:
        needed[f"{mount}/roles/{role.name}"] = write
    return needed


@dataclass(frozen=True)
class VaultServer:
    """Which Vault server answers, where the program takes a different path on each."""

    kind: str
    """"vault" (HashiCorp Vault), "openbao", or "unknown" (it did not answer)."""
    version: str = ""

    @property
    def verifies_tls_ca(self) -> bool:
        """Whether the PostgreSQL plugin verifies the server with the connection's
        `tls_ca` (HashiCorp Vault 1.21.4: enforced, with verify-full; OpenBao 2.7.2
        ignores it, so the CA must be a file named by the URL's sslrootcert)."""
        return self.kind == "vault"


def vault_server(health: dict) -> VaultServer:
    """From `sys/health`: HashiCorp Vault's answer has an `enterprise` field, which
    OpenBao dropped (measured on Vault 1.21.4 and OpenBao 2.7.2)."""
    version = str(health.get("version") or "")
    if not version:
        return VaultServer("unknown")
    return VaultServer("vault" if "enterprise" in health else "openbao", version)


def check_vault(settings: Settings, dry_run: bool) -> VaultServer:
    address = settings.vault.address
    context = vault_tls_context()
    try:
        status, health = _vault_call(address, "sys/health?standbyok=true", context)
    except (OSError, ValueError):
        return VaultServer("unknown")  # unreachable: the provider's error names the address
    server = vault_server(health)
    if health.get("sealed"):
        raise LoginRefused(
            f"Vault at {address} is sealed: unseal it (`bao operator unseal`, or "
            "local/vault-server.sh unseal here), then run this again. Nothing was changed."
        )
    token = os.environ.get("VAULT_TOKEN", "")
    status, _ = _vault_call(address, "auth/token/lookup-self", context, token)
    if status in (401, 403):
        raise LoginRefused(
            f"VAULT_TOKEN is not accepted by Vault at {address} (HTTP {status}: expired, revoked "
            "or from another Vault): log in again (`bao login`, or the CI's JWT login) and export "
            "the new token. Nothing was changed."
        )
    needed = required_vault_capabilities(settings, dry_run)
    status, answer = _vault_call(address, "sys/capabilities-self", context, token, {"paths": sorted(needed)})
    if status != 200:
        return server  # an old Vault without capabilities-self: the provider reports what fails
    missing = [
        f"{capability} on {path}"
        for path, capability in needed.items()
        if not {capability, "root"} & set(answer.get(path) or answer.get("data", {}).get(path) or [])
    ]
    if missing:
        deploy_file = "application.hcl" if settings.layout.kind == "application" else "deployer.hcl"
        policy = (
            "the preview policy (vault-policies/preview.hcl; `pgcreds-preview-<stack>` from `make bootstrap`)"
            if dry_run
            else f"the deploy policy (vault-policies/{deploy_file}; `pgcreds-deploy-<stack>` from `make bootstrap`)"
        )
        raise LoginRefused(
            f"VAULT_TOKEN may not do what this {'preview' if dry_run else 'deployment'} needs at "
            f"{address}: it lacks {'; '.join(missing)}. Use a token with {policy}, written for "
            f"pgcreds:vaultMountPath {settings.vault.mount_path!r}. Nothing was changed."
        )
    return server


def check_postgres(settings: Settings) -> None:
    """Logs in once as the admin, the way the providers will (the deploy session's
    PGPASSFILE). A managed service's login exists only once the service does; an
    application stack's server is its platform stack's (checked where it is read)."""
    if isinstance(settings.postgres, AivenPostgresArgs) or settings.layout.kind == "application":
        return
    endpoint = settings.postgres
    check_postgres_login(
        endpoint.host, endpoint.port, endpoint.database, endpoint.admin_user, endpoint.sslmode, endpoint.sslrootcert
    )


def check_postgres_login(
    host: str, port: int, database: str, admin_user: str, sslmode: str, sslrootcert: str | None
) -> None:
    from clients.postgres import PostgresUnreachable, connect  # psycopg: only where it is needed

    admin_user = os.environ.get("PGUSER") or admin_user  # the session's login, as the providers log in
    try:
        connect(
            {
                "host": host,
                "port": port,
                "database": database,
                "user": admin_user,
                "sslmode": sslmode,
                "sslrootcert": sslrootcert,
            }
        ).close()
    except PostgresUnreachable as error:
        if not any(words in str(error) for words in LOGIN_REFUSED):
            # Nothing can be made or removed there, and a run would record the address
            # (the providers' settings, the objects' server) in the state: a stack that
            # was deployed elsewhere would then be wedged between two servers.
            raise LoginRefused(
                f"pgcreds:postgresPort: PostgreSQL at {host}:{port} (database {database!r}) does not answer: "
                f"{unreachable(error)}. Check pgcreds:postgresHost and pgcreds:postgresPort (unset, they follow "
                "PGHOST and PGPORT, which `. local/dev-env.sh` sets; a CI job must export them), and that the "
                "server runs. Nothing was changed."
            ) from None
        source = f"PGPASSFILE ({os.environ['PGPASSFILE']})" if os.environ.get("PGPASSFILE") else "PGPASSWORD"
        raise LoginRefused(
            f"pgcreds:postgresAdminUser: PostgreSQL at {host}:{port} refused the login of "
            f"{admin_user!r} with the password in {source}: {refusal(error)}. "
            "Open a new deploy session (`. local/dev-env.sh` here, `python -m deployer.session --renew` in CI) "
            "or correct pgcreds:postgresAdminUser. Nothing was changed, and no password was recorded."
        ) from None


def unreachable(error: Exception) -> str:
    """libpq's own words for a server that did not answer (`Connection refused` …)."""
    text = str(error)
    start = text.find("failed: ")
    return (text[start + len("failed: ") :] if start >= 0 else text).split("\n")[0].split(". Check that")[0].strip()


def refusal(error: Exception) -> str:
    """PostgreSQL's own words in a refused login (`FATAL: password authentication failed …`)."""
    text = str(error)
    start = text.find("FATAL:")
    return text[start:].split("\n")[0].strip() if start >= 0 else text.split(". Check that")[0]


def check_vault_verifies(settings: Settings, server: VaultServer) -> None:
    """Outside dev, Vault's connection to an Aiven service verifies the server
    (verify-full against the project's CA). HashiCorp Vault takes the CA in the
    connection; OpenBao ignores that, and reads it only from a file on its own host,
    which this program cannot place there: the operator does, and names it."""
    postgres = settings.postgres
    if (
        not isinstance(postgres, AivenPostgresArgs)
        or postgres.sslmode not in ("verify-ca", "verify-full")
        or postgres.vault_sslrootcert
        or server.verifies_tls_ca
        or server.kind == "unknown"  # (unreachable: the provider's error names the address)
    ):
        return
    fix = (
        f"put the project's CA on Vault's host (`avn project ca-get --project {postgres.project} "
        f"--target-filepath /etc/openbao/aiven-{postgres.project}-ca.pem`) and set pgcreds:vaultSslRootCert to "
        "that path"
    )
    if settings.environment == "dev":
        pulumi.log.warn(
            f"pgcreds:vaultSslRootCert is not set: on OpenBao, Vault's connection to the Aiven service uses "
            f"sslmode=require (encrypted, the server not verified), which only dev allows. To verify it, {fix}."
        )
        return
    raise LoginRefused(
        f"pgcreds:vaultSslRootCert: {server.kind} {server.version} takes the CA of a PostgreSQL connection only "
        "as a file on its own host (it ignores `tls_ca`), so its connection to the Aiven service would not "
        f"verify the server, which only dev allows. {fix[0].upper()}{fix[1:]}. Nothing was changed."
    )


def check_logins(settings: Settings) -> VaultServer:
    """Every login, once, before any resource is registered; which Vault server it is."""
    dry_run = pulumi.runtime.is_dry_run()
    server = check_vault(settings, dry_run)
    check_vault_verifies(settings, server)
    check_postgres(settings)
    return server
