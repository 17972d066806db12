"""The access matrix's probes: who may do what, asked of the real servers.

`security/access.yaml` declares, for each identity, the Vault capabilities it
holds and the PostgreSQL statements it may run; these helpers log in as each
identity and probe two fixed lists (Vault paths through `sys/capabilities-self`,
PostgreSQL statements run and rolled back), so that the test can compare what is
real with what is declared, both ways."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import hvac
import psycopg
import yaml
from psycopg import sql

REPO = Path(__file__).resolve().parents[2]
MATRIX_FILE = REPO / "security" / "access.yaml"


def load_matrix() -> dict:
    return yaml.safe_load(MATRIX_FILE.read_text())


def expand(text: str, names: dict[str, str]) -> str:
    """A path or statement of the matrix with its placeholders (STACK, MOUNT, ROLE, …) filled in."""
    return re.sub(
        r"\b(" + "|".join(map(re.escape, sorted(names, key=len, reverse=True))) + r")\b",
        lambda match: names[match.group(1)],
        text,
    )


# --- Vault --------------------------------------------------------------------


def glob_regex(pattern: str) -> re.Pattern:
    """A Vault policy path as a regex: `+` one segment, a trailing `*` any suffix."""
    body = pattern[:-1] if pattern.endswith("*") else pattern
    regex = "".join("[^/]+" if part == "+" else re.escape(part) for part in re.split(r"(\+)", body))
    return re.compile(regex + (".*" if pattern.endswith("*") else ""))


def declared_capabilities(allows: dict[str, list[str]], path: str) -> set[str]:
    """What the matrix declares on one path: its most specific matching entry (the
    longest pattern, as Vault prefers), or nothing."""
    matching = [pattern for pattern in allows if glob_regex(pattern).fullmatch(path)]
    if not matching:
        return set()
    # Vault prefers the longer pattern, and an exact path over a glob of the same length.
    return set(allows[max(matching, key=lambda pattern: (len(pattern.rstrip("*")), not pattern.endswith("*")))])


def vault_capabilities(client: hvac.Client, paths: Iterable[str]) -> dict[str, set[str]]:
    paths = list(paths)
    answer = client.write("sys/capabilities-self", paths=paths)
    data = answer.get("data", answer)
    return {path: set(data[path]) - {"deny"} for path in paths}


# --- PostgreSQL ---------------------------------------------------------------


@dataclass(frozen=True)
class Login:
    """How to log in as one PostgreSQL identity: a password Vault issued, or (the
    login whose password only Vault knows) a superuser session that takes its
    identity with SET SESSION AUTHORIZATION."""

    user: str
    password: str | None = None
    as_superuser: Callable[[str], psycopg.Connection] | None = None

    def connect(self, host: str, port: int, database: str) -> psycopg.Connection:
        if self.as_superuser:
            conn = self.as_superuser(database)
            conn.execute(sql.SQL("SET SESSION AUTHORIZATION {}").format(sql.Identifier(self.user)))
            return conn
        return psycopg.connect(
            host=host,
            port=port,
            dbname=database,
            user=self.user,
            password=self.password,
            autocommit=True,
            connect_timeout=10,
        )


def pg_statements(names: dict[str, str], groups: list[str]) -> dict[str, tuple[str, sql.Composable]]:
    """The fixed list of PostgreSQL probes: name -> (database placeholder, statement)."""
    ident = sql.Identifier
    probes: dict[str, tuple[str, sql.Composable]] = {}
    for table in ("weekly_metrics_reporting", "employee_salary"):
        probes[f"select {table}"] = ("DATABASE", sql.SQL("SELECT * FROM {} LIMIT 1").format(ident(table)))
        # No row: the privilege is checked when the statement starts, and no constraint is met.
        probes[f"insert {table}"] = (
            "DATABASE",
            sql.SQL("INSERT INTO {0} SELECT (NULL::{0}).* WHERE false").format(ident(table)),
        )
    probes["select pulumi_state"] = ("pulumi_state", sql.SQL("SELECT key FROM pulumi_state LIMIT 1"))
    probes["write pulumi_state"] = (
        "pulumi_state",
        sql.SQL("INSERT INTO pulumi_state (key, data) VALUES ('probe', '{}')"),
    )
    probes["create role"] = ("DATABASE", sql.SQL("CREATE ROLE pgcreds_probe_role"))
    probes["create login"] = ("DATABASE", sql.SQL("CREATE ROLE pgcreds_probe_login LOGIN PASSWORD 'probe-probe'"))
    probes["create table in public"] = ("DATABASE", sql.SQL("CREATE TABLE public.pgcreds_probe (id int)"))
    # A GRANT without the grant option only warns: the probe fails unless PUBLIC holds it afterwards.
    probes["grant to public"] = (
        "DATABASE",
        sql.SQL(
            "GRANT SELECT ON weekly_metrics_reporting TO PUBLIC; SELECT 1 / count(*) FROM pg_class c, "
            "aclexplode(c.relacl) a WHERE c.oid = 'weekly_metrics_reporting'::regclass AND a.grantee = 0"
        ),
    )
    other = names["OTHER_GROUP"]
    probes["alter another application's role"] = (
        "DATABASE",
        sql.SQL("ALTER ROLE {} CONNECTION LIMIT 3").format(ident(other)),
    )
    probes["drop another application's role"] = ("DATABASE", sql.SQL("DROP ROLE {}").format(ident(other)))
    for group in (*groups, other):
        probes[f"set role {group}"] = ("DATABASE", sql.SQL("SET ROLE {}").format(ident(group)))
    return probes


def pg_allowed(
    login: Login, host: str, port: int, databases: dict[str, str], probes: dict[str, tuple[str, sql.Composable]]
) -> set[str]:
    """The probes that succeed as `login`; each runs in a transaction that is rolled
    back (roles and grants are transactional in PostgreSQL), so nothing changes."""
    allowed = set()
    for name, (database, statement) in probes.items():
        try:
            conn = login.connect(host, port, databases.get(database, database))
        except psycopg.OperationalError:
            continue  # no CONNECT on that database: the probe is refused
        try:
            conn.autocommit = False
            with conn.transaction(force_rollback=True):
                conn.execute(statement)
            allowed.add(name)
        except psycopg.Error:
            pass
        finally:
            conn.close()
    return allowed
