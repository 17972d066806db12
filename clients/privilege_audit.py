"""What this stack's roles hold in PostgreSQL beyond what its settings declare,
read from the catalog, and the statements that take it back.

The principals are the stack's group roles and its dynamic users (the login
members of those groups with a VALID UNTIL, as Vault makes them). Found, in the stack's database and server-wide:

- privileges on tables, views, sequences (and their columns), schemas,
  functions and procedures, types, languages, large objects, foreign-data
  wrappers and servers, tablespaces, parameters, and databases;
- the same privileges granted to PUBLIC on the program's own tables;
- default privileges (ALTER DEFAULT PRIVILEGES) that would grant them more;
- role memberships: a group or user in any other role, another login in a
  group, ADMIN OPTION held by a user; role attributes (SUPERUSER, CREATEDB …);
- objects they own (reported; handing them over is left to a person).

Out of reach: objects in other databases of the server (their catalogs are
per-database; the audit connects to the stack's database only) and row-level
security policies naming the roles (they narrow what a privilege gives; they
never grant one).

Used by the PrivilegeAudit dynamic resource (preview lists, `up` revokes) and by
`drift.py` (`make drift`). Statements are composed with psycopg's `sql`; the
privilege words come from the catalog's fixed set.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from clients.postgres import ensure_member, scalar

# relkind -> the word GRANT uses for it
RELATION_KINDS = {"r": "TABLE", "p": "TABLE", "v": "TABLE", "m": "TABLE", "f": "TABLE", "S": "SEQUENCE"}
# Role attributes no group or user of the stack should hold.
ROLE_ATTRIBUTES = ("rolsuper", "rolcreaterole", "rolcreatedb", "rolreplication", "rolbypassrls")
ATTRIBUTE_WORDS = {
    "rolsuper": "SUPERUSER",
    "rolcreaterole": "CREATEROLE",
    "rolcreatedb": "CREATEDB",
    "rolreplication": "REPLICATION",
    "rolbypassrls": "BYPASSRLS",
    "rolcanlogin": "LOGIN",
}
DEFAULT_ACL_KINDS = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES", "n": "SCHEMAS"}
PRIVILEGE_WORDS = {
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "REFERENCES",
    "TRIGGER",
    "USAGE",
    "CREATE",
    "CONNECT",
    "TEMPORARY",
    "EXECUTE",
    "SET",
    "ALTER SYSTEM",
    "MAINTAIN",
}


@dataclass(frozen=True)
class Declared:
    """What the stack's settings grant, as plain data (an input of the dynamic
    resource and an output of the stack)."""

    database: str
    schema: str
    groups: dict[str, dict[str, dict[str, list[str]]]]
    """group role -> {"tables": {table: [privileges]}, "sequences": {sequence: [privileges]}}"""
    user_prefixes: dict[str, str]
    """group role -> the literal prefix of the names its users get ('' when the template has none)."""
    vault_logins: list[str]
    admin_user: str
    program_relations: list[str] = field(default_factory=list)
    """The program's own tables and sequences: a grant to PUBLIC on them counts too."""
    memberships: dict[str, list[str]] = field(default_factory=dict)
    """group role -> the roles it is a member of by the settings (a migrate role: the table owner)."""

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Declared:
        return Declared(
            database=data["database"],
            schema=data["schema"],
            groups=data["groups"],
            user_prefixes=data.get("user_prefixes") or {},
            vault_logins=list(data["vault_logins"]),
            admin_user=data["admin_user"],
            program_relations=list(data.get("program_relations") or ()),
            memberships={k: list(v) for k, v in (data.get("memberships") or {}).items()},
        )

    def union(self, other: Declared | None) -> Declared:
        """What either allows: during a change, the grants of the old and the new settings."""
        if other is None:
            return self
        groups: dict[str, dict[str, dict[str, list[str]]]] = {}
        for source in (other.groups, self.groups):
            for group, kinds in source.items():
                mine = groups.setdefault(group, {"tables": {}, "sequences": {}})
                for kind in ("tables", "sequences"):
                    for name, privileges in (kinds.get(kind) or {}).items():
                        mine[kind][name] = sorted(set(mine[kind].get(name, [])) | set(privileges))
        return Declared(
            database=self.database,
            schema=self.schema,
            groups=groups,
            user_prefixes={**other.user_prefixes, **self.user_prefixes},
            vault_logins=sorted(set(self.vault_logins) | set(other.vault_logins)),
            admin_user=self.admin_user,
            program_relations=sorted(set(self.program_relations) | set(other.program_relations)),
            memberships={
                g: sorted(set(self.memberships.get(g, [])) | set(other.memberships.get(g, [])))
                for g in set(self.memberships) | set(other.memberships)
            },
        )


@dataclass(frozen=True, order=True)
class Finding:
    grantee: str
    what: str
    statement: str | None = None
    """The SQL that takes it back; None where a person must decide (ownership)."""
    act_as: str | None = None
    """The role to run it as (an object's owner), if not the admin itself."""

    def __str__(self) -> str:
        return f"{self.grantee}: {self.what}"


def _ident(name: str) -> sql.Composable:
    return sql.SQL("PUBLIC") if name == "PUBLIC" else sql.Identifier(name)


def _privilege(word: str) -> sql.SQL:
    if word not in PRIVILEGE_WORDS:
        raise ValueError(f"unexpected privilege {word!r} in the catalog")
    return sql.SQL(word)


@dataclass
class _Principals:
    groups: list[str]
    users: dict[str, str]
    """dynamic user -> its group"""


def _principals(conn: psycopg.Connection, declared: Declared, findings: list[Finding]) -> _Principals:
    """The groups that exist, and their members sorted into Vault's logins, the
    admin, dynamic users, and anyone else (a finding)."""
    groups = [
        name
        for (name,) in conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s) ORDER BY rolname", (list(declared.groups),)
        )
    ]
    users: dict[str, str] = {}
    rows = conn.execute(
        "SELECT g.rolname, m.rolname, m.rolcanlogin, m.rolvaliduntil < 'infinity', bool_or(am.admin_option) "
        "FROM pg_auth_members am JOIN pg_roles g ON g.oid = am.roleid JOIN pg_roles m ON m.oid = am.member "
        "WHERE g.rolname = ANY(%s) GROUP BY 1, 2, 3, 4 ORDER BY 1, 2",
        (groups,),
    ).fetchall()
    for group, member, can_login, expires, admin in rows:
        if member in declared.vault_logins or member == declared.admin_user:
            continue
        # Any template's users (those issued before a template changed too): a login
        # with a finite VALID UNTIL. One that no lease accounts for is an orphan
        # (`make drift`); a login without one is someone else's, granted by hand.
        if can_login and expires and member not in users:
            users[member] = group
            if admin:
                findings.append(
                    Finding(
                        member,
                        f"ADMIN OPTION on {group}",
                        sql.SQL("REVOKE ADMIN OPTION FOR {} FROM {}")
                        .format(sql.Identifier(group), sql.Identifier(member))
                        .as_string(conn),
                    )
                )
        else:
            findings.append(
                Finding(
                    member,
                    f"member of {group}",
                    sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(group), sql.Identifier(member)).as_string(conn),
                )
            )
    return _Principals(groups, users)


def _memberships(
    conn: psycopg.Connection, declared: Declared, principals: _Principals, findings: list[Finding]
) -> None:
    names = principals.groups + list(principals.users)
    for member, role in conn.execute(
        "SELECT m.rolname, r.rolname FROM pg_auth_members am JOIN pg_roles r ON r.oid = am.roleid "
        "JOIN pg_roles m ON m.oid = am.member WHERE m.rolname = ANY(%s) GROUP BY 1, 2 ORDER BY 1, 2",
        (names,),
    ).fetchall():
        if principals.users.get(member) == role or role in declared.memberships.get(member, ()):
            continue
        findings.append(
            Finding(
                member,
                f"member of {role}",
                sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(role), sql.Identifier(member)).as_string(conn),
            )
        )


def _attributes(conn: psycopg.Connection, principals: _Principals, findings: list[Finding]) -> None:
    names = principals.groups + list(principals.users)
    columns = sql.SQL(", ").join(map(sql.Identifier, ("rolname", "rolcanlogin", *ROLE_ATTRIBUTES)))
    for row in conn.execute(
        sql.SQL("SELECT {} FROM pg_roles WHERE rolname = ANY(%s) ORDER BY rolname").format(columns), (names,)
    ).fetchall():
        name, can_login, flags = row[0], row[1], dict(zip(ROLE_ATTRIBUTES, row[2:]))
        if name in principals.groups and can_login:
            flags["rolcanlogin"] = True
        for attribute, held in flags.items():
            if held:
                word = ATTRIBUTE_WORDS[attribute]
                findings.append(
                    Finding(
                        name,
                        f"role attribute {word}",
                        sql.SQL("ALTER ROLE {} {}").format(sql.Identifier(name), sql.SQL("NO" + word)).as_string(conn),
                    )
                )


# Every catalog with an ACL: (kind, the GRANT words and object as SQL text, owner, acl), one row per
# privilege held by a principal (or by PUBLIC on the program's relations).
ACL_QUERY = """
WITH principal AS (SELECT oid, rolname FROM pg_roles WHERE rolname = ANY(%(principals)s)),
acl AS (
  SELECT 'relation' AS kind, c.relkind::text AS sub, n.nspname AS schema, c.relname AS name, NULL::text AS col,
         format('%%I.%%I', n.nspname, c.relname) AS object, c.relowner AS owner, c.relacl AS acl
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relacl IS NOT NULL
  UNION ALL
  SELECT 'column', c.relkind::text, n.nspname, c.relname, a.attname, format('%%I.%%I', n.nspname, c.relname),
         c.relowner, a.attacl
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE a.attacl IS NOT NULL AND NOT a.attisdropped
  UNION ALL
  SELECT 'schema', NULL, NULL, nspname, NULL, format('%%I', nspname), nspowner, nspacl FROM pg_namespace
   WHERE nspacl IS NOT NULL
  UNION ALL
  SELECT 'routine', NULL, NULL, p.oid::regprocedure::text, NULL, p.oid::regprocedure::text, p.proowner, p.proacl
    FROM pg_proc p WHERE p.proacl IS NOT NULL
  UNION ALL
  SELECT 'type', NULL, NULL, t.oid::regtype::text, NULL, t.oid::regtype::text, t.typowner, t.typacl
    FROM pg_type t WHERE t.typacl IS NOT NULL
  UNION ALL
  SELECT 'language', NULL, NULL, lanname, NULL, format('%%I', lanname), lanowner, lanacl FROM pg_language
   WHERE lanacl IS NOT NULL
  UNION ALL
  SELECT 'large object', NULL, NULL, oid::text, NULL, oid::text, lomowner, lomacl FROM pg_largeobject_metadata
   WHERE lomacl IS NOT NULL
  UNION ALL
  SELECT 'foreign data wrapper', NULL, NULL, fdwname, NULL, format('%%I', fdwname), fdwowner, fdwacl
    FROM pg_foreign_data_wrapper WHERE fdwacl IS NOT NULL
  UNION ALL
  SELECT 'foreign server', NULL, NULL, srvname, NULL, format('%%I', srvname), srvowner, srvacl
    FROM pg_foreign_server WHERE srvacl IS NOT NULL
  UNION ALL
  SELECT 'tablespace', NULL, NULL, spcname, NULL, format('%%I', spcname), spcowner, spcacl FROM pg_tablespace
   WHERE spcacl IS NOT NULL
  UNION ALL
  SELECT 'database', NULL, NULL, datname, NULL, format('%%I', datname), datdba, datacl FROM pg_database
   WHERE datacl IS NOT NULL
  {parameters}
)
SELECT acl.kind, acl.sub, acl.schema, acl.name, acl.col, acl.object, pg_get_userbyid(acl.owner),
       x.privilege_type, x.is_grantable, coalesce(p.rolname, 'PUBLIC')
  FROM acl CROSS JOIN LATERAL aclexplode(acl.acl) x LEFT JOIN principal p ON p.oid = x.grantee
 WHERE p.oid IS NOT NULL
    OR (x.grantee = 0 AND acl.kind IN ('relation', 'column') AND acl.schema = %(schema)s
        AND acl.name = ANY(%(program_relations)s))
 ORDER BY 10, 1, 6, 8
"""
# PostgreSQL 15 added privileges on configuration parameters.
PARAMETER_ACL = """
  UNION ALL
  SELECT 'parameter', NULL, NULL, parname, NULL, parname, NULL, paracl FROM pg_parameter_acl
   WHERE paracl IS NOT NULL"""
GRANT_WORDS = {
    "schema": "SCHEMA",
    "routine": "ROUTINE",
    "type": "TYPE",
    "language": "LANGUAGE",
    "large object": "LARGE OBJECT",
    "foreign data wrapper": "FOREIGN DATA WRAPPER",
    "foreign server": "FOREIGN SERVER",
    "tablespace": "TABLESPACE",
    "database": "DATABASE",
    "parameter": "PARAMETER",
}


def _allowed(
    declared: Declared, principals: _Principals, grantee: str, kind: str, sub: str | None, schema: str | None, name: str
) -> set[str]:
    """The privileges the settings give `grantee` on this object (none but on the declared
    relations, and USAGE on an application stack's own schema for a group that reads tables)."""
    if kind == "schema" and name == declared.schema != "public" and grantee in principals.groups:
        kinds = declared.groups.get(grantee, {})
        return {"USAGE"} if any((kinds.get("tables") or {}).values()) else set()
    if kind != "relation" or grantee not in principals.groups or schema != declared.schema:
        return set()
    kinds = declared.groups.get(grantee, {})
    if sub == "S":
        return set((kinds.get("sequences") or {}).get(name, ()))
    return set((kinds.get("tables") or {}).get(name, ()))


def _object_acls(
    conn: psycopg.Connection, declared: Declared, principals: _Principals, findings: list[Finding]
) -> None:
    version = conn.info.server_version
    query = ACL_QUERY.replace("{parameters}", PARAMETER_ACL if version >= 150000 else "")
    rows = conn.execute(
        query,
        {
            "principals": principals.groups + list(principals.users),
            "schema": declared.schema,
            "program_relations": declared.program_relations,
        },
    ).fetchall()
    for kind, sub, schema, name, column, object_sql, owner, privilege, grantable, grantee in rows:
        allowed = _allowed(declared, principals, grantee, kind, sub, schema, name)
        target = sql.SQL(object_sql)  # quoted by the catalog query (format %I, regprocedure, regtype)
        if kind == "relation":
            noun = RELATION_KINDS.get(sub, "TABLE")
            words = sql.SQL("{} ON " + noun + " {}").format(_privilege(privilege), target)
            label = f"{privilege} on {noun.lower()} {object_sql}"
        elif kind == "column":
            words = sql.SQL("{} ({}) ON TABLE {}").format(_privilege(privilege), sql.Identifier(column), target)
            label = f"{privilege} on column {object_sql}.{column}"
        else:
            words = sql.SQL("{} ON " + GRANT_WORDS[kind] + " {}").format(_privilege(privilege), target)
            label = f"{privilege} on {kind} {object_sql}"
        if privilege not in allowed:
            findings.append(
                Finding(
                    grantee,
                    label,
                    sql.SQL("REVOKE {} FROM {}").format(words, _ident(grantee)).as_string(conn),
                    act_as=owner,
                )
            )
        elif grantable:
            findings.append(
                Finding(
                    grantee,
                    f"{label} WITH GRANT OPTION",
                    sql.SQL("REVOKE GRANT OPTION FOR {} FROM {}").format(words, _ident(grantee)).as_string(conn),
                    act_as=owner,
                )
            )


def _default_acls(conn: psycopg.Connection, principals: _Principals, findings: list[Finding]) -> None:
    for owner, schema, objects, privilege, grantee in conn.execute(
        "SELECT pg_get_userbyid(d.defaclrole), n.nspname, d.defaclobjtype::text, x.privilege_type, p.rolname "
        "FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace "
        "CROSS JOIN LATERAL aclexplode(d.defaclacl) x JOIN pg_roles p ON p.oid = x.grantee "
        "WHERE p.rolname = ANY(%s) ORDER BY 5, 1, 2, 3, 4",
        (principals.groups + list(principals.users),),
    ).fetchall():
        where = sql.SQL(" IN SCHEMA {}").format(sql.Identifier(schema)) if schema else sql.SQL("")
        statement = sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {}{} REVOKE {} ON {} FROM {}").format(
            sql.Identifier(owner),
            where,
            _privilege(privilege),
            sql.SQL(DEFAULT_ACL_KINDS[objects]),
            sql.Identifier(grantee),
        )
        findings.append(
            Finding(
                grantee,
                f"default {privilege} on {DEFAULT_ACL_KINDS[objects].lower()} that {owner} "
                f"creates{' in schema ' + schema if schema else ''}",
                statement.as_string(conn),
                act_as=owner,
            )
        )


def _ownership(conn: psycopg.Connection, principals: _Principals, findings: list[Finding]) -> None:
    for owner, kind, name in conn.execute(
        "SELECT pg_get_userbyid(relowner), 'relation', format('%%I.%%I', relnamespace::regnamespace, relname) "
        "FROM pg_class WHERE pg_get_userbyid(relowner) = ANY(%(p)s) "
        "UNION ALL SELECT pg_get_userbyid(proowner), 'routine', oid::regprocedure::text FROM pg_proc "
        "WHERE pg_get_userbyid(proowner) = ANY(%(p)s) "
        "UNION ALL SELECT pg_get_userbyid(nspowner), 'schema', format('%%I', nspname) FROM pg_namespace "
        "WHERE pg_get_userbyid(nspowner) = ANY(%(p)s) "
        "UNION ALL SELECT pg_get_userbyid(datdba), 'database', format('%%I', datname) FROM pg_database "
        "WHERE pg_get_userbyid(datdba) = ANY(%(p)s) ORDER BY 1, 2, 3",
        {"p": principals.groups + list(principals.users)},
    ).fetchall():
        findings.append(Finding(owner, f"owns {kind} {name} (hand it to the table owner role by hand)"))


def audit(conn: psycopg.Connection, declared: Declared) -> list[Finding]:
    """Everything the stack's roles hold that `declared` does not give them."""
    findings: list[Finding] = []
    principals = _principals(conn, declared, findings)
    if principals.groups or principals.users:
        _memberships(conn, declared, principals, findings)
        _attributes(conn, principals, findings)
        _default_acls(conn, principals, findings)
        _ownership(conn, principals, findings)
    _object_acls(conn, declared, principals, findings)
    return sorted(set(findings))


def take_back(conn: psycopg.Connection, findings: Iterable[Finding]) -> list[Finding]:
    """Runs each finding's statement (as the object's owner where there is one the
    admin may become, as PostgreSQL wants for a REVOKE of what the owner granted);
    returns those that could not run. A REVOKE the admin may not make is a
    warning, not an error, in PostgreSQL: the caller audits again to be sure."""
    failed = []
    superuser = bool(scalar(conn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
    for finding in findings:
        if not finding.statement:
            failed.append(finding)
            continue
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('pgcreds: privilege audit'))")
                owner = finding.act_as
                granted = False
                if owner and not superuser and owner != conn.info.user:
                    become = conn.execute("SELECT NOT rolsuper FROM pg_roles WHERE rolname = %s", (owner,)).fetchone()
                    if become and become[0]:
                        granted = ensure_member(conn, owner)
                        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner)))
                conn.execute(finding.statement)
                conn.execute("RESET ROLE")
                if granted and owner:
                    conn.execute(sql.SQL("REVOKE {} FROM CURRENT_USER").format(sql.Identifier(owner)))
        except psycopg.Error:
            failed.append(finding)
    return failed


# --- orphans --------------------------------------------------------------------


def login_users(
    conn: psycopg.Connection, prefixes: Iterable[str], groups: Iterable[str]
) -> list[tuple[str, datetime.datetime | None]]:
    """Login roles that look like this stack's users, with a finite VALID UNTIL as
    Vault's have: members of its groups, or members of no role at all that are
    named with one of its templates' prefixes (another stack's users are members
    of that stack's groups)."""
    patterns = [
        prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%" for prefix in prefixes if prefix
    ]
    return conn.execute(
        "SELECT r.rolname, r.rolvaliduntil FROM pg_roles r "
        "WHERE r.rolcanlogin AND r.rolvaliduntil < 'infinity' AND ("
        "  EXISTS (SELECT 1 FROM pg_auth_members am JOIN pg_roles g ON g.oid = am.roleid "
        "          WHERE am.member = r.oid AND g.rolname = ANY(%s))"
        "  OR (r.rolname LIKE ANY(%s) AND NOT EXISTS (SELECT 1 FROM pg_auth_members am WHERE am.member = r.oid)))"
        " ORDER BY 1",
        (list(groups), patterns),
    ).fetchall()
