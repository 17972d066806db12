"""A deploy session: turns the deployer's Vault token into the short-lived
PostgreSQL logins a Pulumi run needs, handed over the way the drivers read them.

    eval "$(python -m deployer.session)"              # preview, up, destroy
    eval "$(python -m deployer.session --read-only)"  # a pull request's preview

Reads VAULT_ADDR, VAULT_TOKEN (VAULT_CACERT) and PULUMI_BACKEND_URL, a
`postgres://host:port/database?…` URL without a password. From Vault:
- a login to the state database (`pgcreds-platform/creds/state-write`, or
  `state-read`), valid a few hours, tied to the token's lease; its name goes into
  PULUMI_BACKEND_URL (user@host), which Pulumi's `postgres://` backend reads;
- the program's PostgreSQL login, named by PGUSER, which the postgresql provider
  (lib/pq) and the dynamic providers (libpq) read: to deploy, the deployer's
  (`pgcreds-platform/static-creds/deployer`; an application stack's own,
  `static-creds/deployer-<application>`, with --application or
  PGCREDS_APPLICATION), whose password Vault rotates (one about to be rotated is
  rotated now, so that it cannot change during the run);
  with --read-only, a preview login issued for this run
  (`pgcreds-platform/creds/preview`), which may read the catalogs and nothing else:
  a pull request's code runs with it.
With --aiven (a stack in aiven mode; PGCREDS_AIVEN=true), a deploy session also
mints the run's Aiven API token from the long-lived one that only its policy may
read (`pgcreds-aiven/api`): a user access token that dies 10 minutes after its
last use (Aiven's shortest), described with the run, in a file of the session
folder that AIVEN_TOKEN is read from; `--end` revokes it. A preview gets none.
Both passwords go into a pgpass file (mode 0600, in a folder of mode 0700) named
by PGPASSFILE. PGCREDS_SESSION_KIND says which kind of session it is. Prints only
`export` lines, never a password. A session whose logins live on for another 45
minutes is reused, so sourcing this again costs no Vault call (--renew reads new
ones into the same file, for the runs that already use it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from clients import aiven_api
from clients.names import APPLICATION_NAME
from clients.tls import operator_token, vault_ca_problem, vault_tls_verify
from deployer import (
    AIVEN_MOUNT,
    AIVEN_SECRET,
    PLATFORM_MOUNT,
    PREVIEW_ROLE,
    STATE_READ_ROLE,
    STATE_WRITE_ROLE,
    deploy_login,
    deployer_role,
    stack_deployer_role,
)

if TYPE_CHECKING:
    import hvac

# The team backend's settings of the CLI. Every checkpoint rewrites the stack's whole
# row (and copies the previous one first), so the row's size is the backend's cost:
# zstd makes it 15x smaller, and the CLI reads plain and compressed files alike, by
# their first bytes (STATE_COMPRESSION: the setting and its file extension). The
# per-update copy to `.pulumi/backups` is left out: the state database's own
# backups are the history, and those rows were never pruned. Measured by
# bench/backend.py: cold up 1.12x, destroy 1.15x the file backend (gzip 1.24x, 1.34x).
STATE_COMPRESSION = {"PULUMI_DIY_BACKEND_ZSTD": ".zst"}
STATE_SETTINGS = {
    **{setting: "true" for setting in STATE_COMPRESSION},
    "PULUMI_DIY_BACKEND_DISABLE_CHECKPOINT_BACKUPS": "true",
}
# A login that would expire within this margin is not handed to a new run.
REUSE_MARGIN_SECONDS = 45 * 60
# The deployer's password is rotated now when its next rotation is this close.
ROTATE_MARGIN_SECONDS = 60 * 60


class SessionError(SystemExit):
    def __init__(self, message: str):
        super().__init__(f"deploy session: {message}")


def backend_server(url: str) -> tuple[str, int, str]:
    """host, port and database of a `postgres://` backend URL that carries no password
    (a user in it is the last session's state login, replaced by this one's)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise SessionError(
            f"PULUMI_BACKEND_URL must be the team's postgres:// state database "
            f"(postgres://host:port/pulumi_state?sslmode=verify-full), not {parts.scheme or url!r}"
        )
    if parts.password:
        raise SessionError(
            "PULUMI_BACKEND_URL must not carry a password: the state login comes from Vault "
            "(PGPASSFILE); remove user:password@ from it"
        )
    return parts.hostname or "localhost", parts.port or 5432, parts.path.lstrip("/") or "pulumi_state"


def backend_url(url: str, user: str = "") -> str:
    """The backend URL with this user in it (none: the URL as the repository holds it)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}@{netloc}" if user else netloc))


def write_private(path: Path, text: str) -> None:
    """`text` into `path`, mode 0600, replaced whole (a reader never sees half of it)."""
    temporary = path.with_suffix(".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(temporary, path)


def pgpass_field(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def vault_client() -> hvac.Client:
    import hvac  # only when the cached session cannot be reused (0.1 s to import)

    address, token = os.environ.get("VAULT_ADDR", ""), operator_token()
    if not address or not token:
        raise SessionError(
            "VAULT_ADDR and VAULT_TOKEN must be set (CI: the token of the workflow's jwt login; "
            "locally: `. local/dev-env.sh`)"
        )
    return hvac.Client(url=address, token=token, verify=vault_tls_verify())


def session_dir(read_only: bool, application: str = "", aiven_stack: str = "") -> Path:
    """One folder per Vault, token, kind of session and deploy login; private to this user."""
    key = "|".join(
        (
            os.environ.get("VAULT_ADDR", ""),
            operator_token() or "",
            backend_url(os.environ.get("PULUMI_BACKEND_URL", "")),
            str(read_only),
            application,
            *([aiven_stack] if aiven_stack else []),
        )
    )
    base = Path(os.environ.get("PGCREDS_SESSION_DIR") or os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    folder = base / f"pgcreds-session-{os.getuid()}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


def read(client: hvac.Client, path: str) -> dict:
    import hvac.exceptions

    try:
        return client.read(path) or {}
    except hvac.exceptions.Forbidden:
        raise SessionError(
            f"Vault refused to read {path} with this token: it needs the deploy (or preview) "
            "policy of the stack (vault-policies/, made by `make bootstrap`)"
        ) from None
    except hvac.exceptions.InvalidPath:
        raise SessionError(f"Vault has no {path}: run the one-time `make bootstrap` against this Vault") from None


def deployer_login(
    client: hvac.Client, may_rotate: bool, application: str = "", aiven_stack: str = ""
) -> tuple[str, str, int]:
    """The stack's deploy login (the deployer's, or an application stack's own), its
    password and when Vault will rotate it next (epoch seconds). A single stack on an
    Aiven service that `make bootstrap --aiven-stack` handed over deploys as the
    deployer's login there (`static-creds/deployer-stack-<stack>`)."""
    role = deployer_role(application)
    data = own_deployer_on_service(client, aiven_stack) if aiven_stack and not application else None
    if data is not None:
        role = stack_deployer_role(aiven_stack)
    path = f"{PLATFORM_MOUNT}/static-creds/{role}"
    if data is None:
        data = read(client, path)["data"]
    if may_rotate and int(data["ttl"]) < ROTATE_MARGIN_SECONDS:
        client.write(f"{PLATFORM_MOUNT}/rotate-role/{role}")
        data = read(client, path)["data"]
    return deploy_login(application), data["password"], int(time.time()) + int(data["ttl"])


def own_deployer_on_service(client: hvac.Client, stack: str) -> dict | None:
    """The credentials of the stack's own deploy login on its Aiven service (its static
    role), or None where there is none or this token may not read it."""
    import hvac.exceptions

    try:
        answer = client.read(f"{PLATFORM_MOUNT}/static-creds/{stack_deployer_role(stack)}")
    except (hvac.exceptions.InvalidPath, hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden):
        return None
    return answer["data"] if answer else None


def preview_login(client: hvac.Client) -> tuple[str, str, int]:
    """A login for this preview alone: it may read PostgreSQL's catalogs, nothing else."""
    issued = read(client, f"{PLATFORM_MOUNT}/creds/{PREVIEW_ROLE}")
    return issued["data"]["username"], issued["data"]["password"], int(time.time()) + int(issued["lease_duration"])


def open_session(
    read_only: bool, renew: bool = False, application: str = "", aiven: bool = False, stack: str = ""
) -> dict:
    if aiven and read_only:
        raise SessionError(
            "a preview gets no Aiven token (--aiven with --read-only): a token that may read the service "
            "may read its admin's password (the aiven provider reads it on every refresh), and a pull "
            "request's preview runs the pull request's own code. Preview a stack in aiven mode from main, "
            "or as an operator (docs/aiven.md)"
        )
    session = database_session(read_only, renew, application, stack if aiven else "")
    if aiven:
        session["aiven"] = mint_aiven_token(vault_client(), Path(session["passfile"]).parent)
    return session


def database_session(read_only: bool, renew: bool = False, application: str = "", aiven_stack: str = "") -> dict:
    # Checked here, first: the CLI's secrets provider would only name the path.
    problem = vault_ca_problem()
    if problem:
        raise SessionError(problem)
    url = os.environ.get("PULUMI_BACKEND_URL", "")
    host, port, database = backend_server(url)
    if application and not APPLICATION_NAME.fullmatch(application):
        raise SessionError(
            f"the application {application!r} (--application or PGCREDS_APPLICATION) must be "
            "lower-case letters and digits, as the stack's pgcreds:application"
        )
    folder = session_dir(read_only, application, aiven_stack)
    passfile, record = folder / "pgpass", folder / "session.json"
    now = int(time.time())
    if record.exists() and passfile.exists() and not renew:
        known = json.loads(record.read_text())
        if min(known.get("state_expires", 0), known.get("program_expires", 0)) > now + REUSE_MARGIN_SECONDS:
            problem = session_problem(known, passfile, url, host, port, database)
            if not problem:
                return {**known, "passfile": str(passfile), "backend_url": backend_url(url, known["state_user"])}
            print(f"deploy session: the cached logins no longer work ({problem}); reading new ones", file=sys.stderr)
    client = vault_client()
    state_path = f"{PLATFORM_MOUNT}/creds/{STATE_READ_ROLE if read_only else STATE_WRITE_ROLE}"
    state = read(client, state_path)
    program_user, program_password, program_expires = (
        preview_login(client)
        if read_only
        else deployer_login(client, may_rotate=True, application=application, aiven_stack=aiven_stack)
    )
    program_role = "" if read_only else deployer_role(application)
    lines = [
        # The state login, only for the state database on its server.
        ":".join(map(pgpass_field, (host, str(port), database, state["data"]["username"], state["data"]["password"]))),
        # The program's login, wherever its stacks' servers are.
        ":".join(("*", "*", "*", pgpass_field(program_user), pgpass_field(program_password))),
    ]
    write_private(passfile, "\n".join(lines) + "\n")
    known = {
        "state_user": state["data"]["username"],
        "state_expires": now + int(state["lease_duration"]),
        "program_user": program_user,
        "program_expires": program_expires,
        "program_role": program_role,
        "state_lease": state["lease_id"],
        "kind": "preview" if read_only else "deploy",
    }
    record.write_text(json.dumps(known))
    os.chmod(record, 0o600)
    return {**known, "passfile": str(passfile), "backend_url": backend_url(url, known["state_user"])}


# What the run's Aiven token is exported as, and what `--end` revokes it with.
AIVEN_EXPORTS = ("AIVEN_TOKEN", "AIVEN_WEB_URL", "PGCREDS_AIVEN_TOKEN_PREFIX")


def run_description() -> str:
    """Who minted a token, for Aiven's token list: the CI run, or the person's machine."""
    if os.environ.get("GITHUB_RUN_ID"):
        where = (
            f"{os.environ.get('GITHUB_REPOSITORY', '?')} run {os.environ['GITHUB_RUN_ID']} "
            f"({os.environ.get('GITHUB_WORKFLOW', '?')}, {os.environ.get('GITHUB_REF', '?')})"
        )
    else:
        where = f"{os.environ.get('USER') or os.getuid()}@{os.uname().nodename}"
    stack = os.environ.get("PGCREDS_STACK", "")
    return f"pg-dynamic-creds deploy session{f' of stack {stack}' if stack else ''}: {where}"


def mint_aiven_token(client: hvac.Client, folder: Path) -> dict[str, str]:
    """The run's own Aiven token, minted from the long-lived one in Vault, in a file of
    the session folder (0600): what to export."""
    api_url, token = aiven_api.stored_token(read(client, f"{AIVEN_MOUNT}/data/{AIVEN_SECRET}")["data"]["data"])
    try:
        minted = aiven_api.mint_token(api_url, token, run_description())
    except aiven_api.AivenApiError as error:
        raise SessionError(
            f"the run's Aiven token could not be minted from {AIVEN_MOUNT}/{AIVEN_SECRET}: {error}. "
            'If the long-lived token was revoked, store a new one: make bootstrap BOOTSTRAP_ARGS="… '
            '--aiven-token-file <file>"'
        ) from None
    token_file = folder / "aiven-token"
    write_private(token_file, minted.full_token)
    return {"token_file": str(token_file), "api_url": api_url, "prefix": minted.prefix}


def session_problem(known: dict, passfile: Path, url: str, host: str, port: int, database: str) -> str:
    """Why a cached session can no longer be used, or "": its logins are tried once
    each, on the state database's server (`host`, `port`, `database`, as
    `backend_server` read them from `url`; a revoked lease drops a login; a
    `rotate-role` by hand changes the deployer's password). A server that does
    not answer is not the session's fault: the run itself says so."""
    if "kind" not in known:
        return "a session of an earlier version"
    import psycopg  # only for a cached session (0.1 s to import)

    query = dict(parse_qsl(urlsplit(url).query))
    server: dict[str, Any] = dict(
        host=host,
        port=port,
        passfile=str(passfile),
        sslmode=query.get("sslmode", "prefer"),
        sslrootcert=query.get("sslrootcert"),
        connect_timeout=5,
        application_name="pgcreds-session-check",
    )
    logins = [(known["state_user"], database)]
    if known["kind"] == "deploy":  # (the program's login may not connect there: only a refused password counts)
        logins.append((known["program_user"], "postgres"))
    for user, database in logins:
        try:
            psycopg.connect(user=user, dbname=database, **server).close()
        except psycopg.OperationalError as error:
            text = str(error)
            if "password authentication failed" in text or ("role" in text and "does not exist" in text):
                return f"PostgreSQL refused the login {user}"
    return ""


def end_session() -> None:
    """The end of a CI job: the run's Aiven token is revoked (with itself), the job's
    Vault token is revoked, and with it every lease it read (the state login is
    dropped from PostgreSQL at once); the session's files are removed by the caller
    (ci/common.sh removes the job's folder)."""
    import hvac.exceptions

    token, api_url, prefix = (os.environ.get(name, "") for name in AIVEN_EXPORTS)
    if token and prefix:
        try:
            aiven_api.revoke_token(api_url or aiven_api.DEFAULT_API_URL, token, prefix)
        except aiven_api.AivenApiError as error:  # expired already: nothing left to revoke
            print(f"deploy session: the run's Aiven token was not revoked ({error})", file=sys.stderr)
    if not (os.environ.get("VAULT_ADDR") and operator_token()):
        return
    try:
        vault_client().auth.token.revoke_self()
    except (hvac.exceptions.VaultError, OSError) as error:  # already revoked or expired: nothing left to end
        print(f"deploy session: the job's token was not revoked ({error})", file=sys.stderr)


def session_exports(printed: str) -> dict[str, str]:
    """The variables this command's output exports, as a shell's `eval` would set
    them (values may be quoted): for callers that run it as a subprocess."""
    exported = {}
    for line in printed.splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            exported[name] = shlex.split(value)[0] if value else ""
            if exported[name].startswith(READ_FILE[0]) and exported[name].endswith(READ_FILE[1]):
                # (a secret the shell reads from the session's file: so must the caller)
                path = exported[name][len(READ_FILE[0]) : -len(READ_FILE[1])]
                exported[name] = Path(shlex.split(path)[0]).read_text()
    return exported


# A secret's export reads it from its file when the shell evaluates the line, so the
# printed text never holds it: export NAME="$(cat 'file')".
READ_FILE = ("$(cat ", ")")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Short-lived PostgreSQL logins for a Pulumi run, from Vault.")
    parser.add_argument("--read-only", action="store_true", help="a state login that may only read (previews)")
    parser.add_argument(
        "--renew",
        action="store_true",
        help="read new logins even if the session's still live (after a `rotate-role` by hand)",
    )
    parser.add_argument(
        "--application",
        default=os.environ.get("PGCREDS_APPLICATION", ""),
        help="an application stack's pgcreds:application: deploy as its own login "
        "(pgcreds_deploy_<application>), not the deployer's (default: PGCREDS_APPLICATION)",
    )
    parser.add_argument(
        "--aiven",
        action="store_true",
        default=os.environ.get("PGCREDS_AIVEN", "") == "true",
        help="a stack in aiven mode: mint the run's Aiven API token (default: PGCREDS_AIVEN=true)",
    )
    parser.add_argument(
        "--stack",
        default=os.environ.get("PGCREDS_STACK", ""),
        help="with --aiven: the stack, whose own deploy login on its service is used once "
        "`make bootstrap --aiven-stack` made it (default: PGCREDS_STACK)",
    )
    parser.add_argument(
        "--end", action="store_true", help="CI, at the job's end: revoke the job's Vault token and the logins it read"
    )
    args = parser.parse_args(argv)
    if args.end:
        end_session()
        return 0
    password_in_shell = bool(os.environ.pop("PGPASSWORD", None))  # (not for this process's own check either)
    session = open_session(args.read_only, args.renew, args.application, args.aiven, args.stack)
    if password_in_shell:
        # libpq prefers PGPASSWORD to PGPASSFILE: every login would try that password.
        print(
            "deploy session: PGPASSWORD was set in this shell; it is unset, as libpq would use it instead of "
            "the session's PGPASSFILE for every login",
            file=sys.stderr,
        )
        print("unset PGPASSWORD")
    print(f"export PULUMI_BACKEND_URL='{session['backend_url']}'")
    print(f"export PGPASSFILE={session['passfile']}")
    print(f"export PGUSER={session['program_user']}")
    print(f"export PGCREDS_SESSION_KIND={session['kind']}")
    for setting, value in STATE_SETTINGS.items():
        print(f"export {setting}={value}")
    if "aiven" in session:
        aiven = session["aiven"]
        token_name, url_name, prefix_name = AIVEN_EXPORTS
        print(f'export {token_name}="{READ_FILE[0]}{shlex.quote(aiven["token_file"])}{READ_FILE[1]}"')
        print(f"export {url_name}={shlex.quote(aiven['api_url'])}")
        print(f"export {prefix_name}={shlex.quote(aiven['prefix'])}")
    print(
        f"# state login valid until {time.strftime('%Y-%m-%d %H:%M', time.localtime(session['state_expires']))}, "
        f"program login until {time.strftime('%Y-%m-%d %H:%M', time.localtime(session['program_expires']))}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
