"""A local stand-in of the Aiven REST API as the `aiven` provider plugin uses it
for one Aiven for PostgreSQL service: the project and its CA, service plans,
create, read (REBUILDING, then RUNNING with a backup), update (plan,
maintenance window, user config, termination protection, power), delete, tags
and static IPs; a service user's credential reset; and the user access tokens a
deploy session mints from the long-lived one (create with a max age of 600 s to
ten years, optionally extended by use; list; revoke), refused once expired or
revoked. Answers and errors have the real API's JSON shapes.

Each service is a real database on the local PostgreSQL server, which serves TLS
with the test CA, owned by a non-superuser admin with CREATEROLE (like
Aiven's avnadmin). A request the stand-in does not know is answered 501 with
its method and path, and recorded in `unknown`, so a provider upgrade that
needs more shows up at once.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
from psycopg import sql

REBUILD_SECONDS = 1.0
# Plans the project offers, as `<tier>-<size>` with their base disk (MB).
PLANS = {"hobbyist": 8192, "startup-4": 81920, "startup-8": 178176, "business-4": 81920, "business-8": 178176}
CLOUDS = ("google-europe-west1", "aws-eu-west-1", "azure-germany-westcentral")
PROTECTED = "Service is protected against termination and shutdown. Remove termination protection first."
# A user access token's `max_age_seconds`, as the API bounds it (the aiven plugin's
# schema for tokens: "Value must be between `600` and `315360000`").
TOKEN_MAX_AGE_RANGE = (600, 315360000)
# How many characters of a token its `token_prefix` shows.
TOKEN_PREFIX_LENGTH = 10


def error(status: HTTPStatus, message: str, code: str = "") -> tuple[int, dict]:
    """Aiven's error body: a message, and the errors with their status."""
    entry = {"message": message, "status": int(status)}
    if code:
        entry["error_code"] = code
    return status, {"message": message, "errors": [entry]}


@dataclass
class Service:
    name: str
    plan: str
    cloud: str
    user_config: dict[str, Any]
    termination_protection: bool
    admin_user: str
    admin_password: str
    database: str
    maintenance: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)
    powered: bool = True
    changed: float = field(default_factory=time.monotonic)
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


@dataclass
class AccessToken:
    """A user access token minted through `POST /v1/access_token`."""

    full_token: str
    description: str
    max_age_seconds: int | None
    extend_when_used: bool
    scopes: list[str] | None
    created: float
    last_used: float
    revoked: bool = False

    @property
    def prefix(self) -> str:
        return self.full_token[:TOKEN_PREFIX_LENGTH]

    def expires(self) -> float | None:
        if self.max_age_seconds is None:
            return None
        return (self.last_used if self.extend_when_used else self.created) + self.max_age_seconds

    def live(self, now: float) -> bool:
        expires = self.expires()
        return not self.revoked and (expires is None or now < expires)


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


class AivenStandIn:
    """Serves one project on 127.0.0.1 (port chosen by the kernel) until `stop()`."""

    def __init__(
        self,
        project: str,
        token: str,
        pg_host: str,
        pg_port: int,
        ca_pem: str,
        superuser: Callable[[], psycopg.Connection],
    ):
        self.project, self.token = project, token
        self.pg_host, self.pg_port, self.ca_pem = pg_host, pg_port, ca_pem
        self.superuser = superuser
        self.services: dict[str, Service] = {}
        self.requests: list[tuple[str, str]] = []
        """(method, path) of every request, in order."""
        self.bodies: list[tuple[str, str, Any]] = []
        """(method, path, body) of every request that had a body."""
        self.authorized: list[tuple[str, str, str]] = []
        """(method, path, "long-lived" or "minted") of every request a token was accepted for."""
        self.unknown: list[str] = []
        self.access_tokens: dict[str, AccessToken] = {}
        """Minted tokens by their full text (the constructor's `token` is long-lived)."""
        self.clock_offset = 0.0
        """Seconds added to the wall clock: a test moves time on to expire tokens."""
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> AivenStandIn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def calls(self, method: str | None = None, pattern: str = "") -> list[tuple[str, str]]:
        """The requests so far whose method is `method` and path contains `pattern`."""
        return [(m, p) for m, p in self.requests if (method is None or m == method) and pattern in p]

    def calls_by(self, kind: str) -> list[tuple[str, str]]:
        """The requests made with the long-lived token ("long-lived") or a minted one
        ("minted"), minting itself left out."""
        return [(m, p) for m, p, k in self.authorized if k == kind and p != "/v1/access_token"]

    def now(self) -> float:
        return time.time() + self.clock_offset

    def token_used(self, full_token: str) -> bool:
        """Whether a request with this token would be served now."""
        minted = self.access_tokens.get(full_token)
        return full_token == self.token or (minted is not None and minted.live(self.now()))

    # --- answers --------------------------------------------------------------

    def _project_json(self) -> dict[str, Any]:
        return {
            "project_name": self.project,
            "default_cloud": CLOUDS[0],
            "ca_cert": self.ca_pem,
            "account_id": "a1b2c3",
            "billing_group_id": "bg-1",
            "estimated_balance": "0.00",
            "vpc_peering_connection_types": [],
            "tags": {},
            "tech_emails": [],
            "available_credits": "0.00",
            "country_code": "FI",
            "payment_method": "no_payment_expected",
        }

    def _plan_json(self, plan: str) -> dict[str, Any]:
        return {
            "service_plan": plan,
            "service_type": "pg",
            "node_count": 1 if plan.startswith(("hob", "start")) else 2,
            "disk_space_mb": PLANS[plan],
            "disk_space_cap_mb": PLANS[plan] * 4,
            "disk_space_step_mb": 30720,
            "max_memory_percent": 75,
            "shard_count": None,
            "backup_config": {"interval": 24, "max_count": 2, "recovery_mode": "pitr"},
            "regions": {
                cloud: {"disk_space_mb": PLANS[plan], "node_memory_mb": 4096, "price_usd": "0.10"} for cloud in CLOUDS
            },
        }

    def _service_json(self, service: Service, include_secrets: bool = True) -> dict[str, Any]:
        ready = time.monotonic() - service.changed >= REBUILD_SECONDS
        state = ("RUNNING" if ready else "REBUILDING") if service.powered else "POWEROFF"
        password = service.admin_password if include_secrets else None
        params = {
            "host": self.pg_host,
            "port": str(self.pg_port),
            "user": service.admin_user,
            "dbname": service.database,
            "sslmode": "require",
        }
        if password:
            params["password"] = password
        uri = (
            f"postgres://{service.admin_user}:{password or ''}@{self.pg_host}:{self.pg_port}/"
            f"{service.database}?sslmode=require"
        )
        return {
            "service_name": service.name,
            "service_type": "pg",
            "service_type_description": "PostgreSQL",
            "plan": service.plan,
            "cloud_name": service.cloud,
            "cloud_description": service.cloud,
            "state": state,
            "termination_protection": service.termination_protection,
            "user_config": service.user_config,
            "maintenance": service.maintenance,
            "service_uri": uri,
            "service_uri_params": params,
            "project_vpc_id": None,
            "node_count": self._plan_json(service.plan)["node_count"],
            "node_cpu_count": 2,
            "node_memory_mb": 4096,
            "disk_space_mb": PLANS[service.plan],
            "group_list": ["default"],
            "create_time": service.created_at,
            "update_time": service.created_at,
            "users": [{"username": service.admin_user, "password": password, "type": "primary"}],
            "components": [
                {
                    "component": "pg",
                    "host": self.pg_host,
                    "port": self.pg_port,
                    "route": "dynamic",
                    "usage": "primary",
                    "ssl": True,
                }
            ],
            # "Ready" for the plugin is RUNNING with at least one backup.
            "backups": [{"backup_name": "base-1", "backup_time": service.created_at, "data_size": 1024}]
            if ready
            else [],
            "connection_info": {"pg": [uri], "pg_params": [params], "pg_standby": [], "pg_syncing": []},
            "databases": [service.database],
            "service_integrations": [],
            "tags": service.tags,
            "tech_emails": [],
            "node_states": [],
            "metadata": {"pg_version": service.user_config.get("pg_version")},
        }

    def _token_json(self, token: AccessToken, include_full: bool = False) -> dict[str, Any]:
        expires = token.expires()
        answer = {
            "create_time": iso(token.created),
            "created_manually": False,
            "currently_active": token.live(self.now()),
            "description": token.description,
            "expiry_time": iso(expires) if expires is not None else None,
            "extend_when_used": token.extend_when_used,
            "last_ip": "127.0.0.1",
            "last_used_time": iso(token.last_used),
            "last_user_agent": None,
            "last_user_agent_human_readable": None,
            "max_age_seconds": token.max_age_seconds,
            "scopes": token.scopes,
            "token_prefix": token.prefix,
        }
        if include_full:
            answer["full_token"] = token.full_token
        return answer

    def create_token(self, body: dict[str, Any]) -> tuple[int, dict]:
        """`POST /v1/access_token` (AccessTokenCreate): description, max_age_seconds,
        extend_when_used, scopes; the answer is the only place the full token appears."""
        max_age = body.get("max_age_seconds")
        low, high = TOKEN_MAX_AGE_RANGE
        if max_age is not None and not (isinstance(max_age, int) and low <= max_age <= high):
            return error(HTTPStatus.BAD_REQUEST, f"max_age_seconds must be between {low} and {high}")
        if not isinstance(body.get("description", ""), str):
            return error(HTTPStatus.BAD_REQUEST, "Invalid description")
        scopes = body.get("scopes")
        if scopes is not None and not (isinstance(scopes, list) and all(isinstance(x, str) for x in scopes)):
            return error(HTTPStatus.BAD_REQUEST, "Invalid scopes")
        now = self.now()
        token = AccessToken(
            full_token=secrets.token_urlsafe(48),
            description=body.get("description") or "",
            max_age_seconds=max_age,
            extend_when_used=bool(body.get("extend_when_used")),
            scopes=scopes,
            created=now,
            last_used=now,
        )
        self.access_tokens[token.full_token] = token
        return HTTPStatus.OK, self._token_json(token, include_full=True)

    def revoke_token(self, prefix: str) -> tuple[int, dict]:
        """`DELETE /v1/access_token/{token_prefix}` (AccessTokenRevoke)."""
        found = [t for t in self.access_tokens.values() if t.prefix == prefix and not t.revoked]
        if not found:
            return error(HTTPStatus.NOT_FOUND, "Access token not found", "access_token_not_found")
        for token in found:
            token.revoked = True
        return HTTPStatus.OK, {"message": "Access token revoked"}

    def reset_credentials(self, service: Service, username: str, body: dict[str, Any]) -> tuple[int, dict]:
        """`PUT /v1/project/{p}/service/{s}/user/{u}` (ServiceUserCredentialsModify)
        with `operation: reset-credentials`: a new password (`new_password`, or a
        random one), in force on the server at once; the answer is the service."""
        if username != service.admin_user:
            return error(HTTPStatus.NOT_FOUND, f"Service user {username} does not exist", "service_user_not_found")
        if body.get("operation") != "reset-credentials":
            return error(HTTPStatus.BAD_REQUEST, f"Unsupported operation {body.get('operation')!r}")
        password = body.get("new_password") or secrets.token_urlsafe(18)
        if len(password) < 8:
            return error(HTTPStatus.BAD_REQUEST, "Password must be at least 8 characters long")
        with self.superuser() as admin:
            admin.execute(
                sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(sql.Identifier(username), sql.Literal(password))
            )
        service.admin_password = password
        return HTTPStatus.OK, {"message": "Service user credentials reset", "service": self._service_json(service)}

    def create(self, body: dict[str, Any]) -> tuple[int, dict]:
        name, plan, cloud = body.get("service_name", ""), body.get("plan", ""), body.get("cloud") or CLOUDS[0]
        if body.get("service_type") != "pg" or not re.match(r"^[a-z][a-z0-9-]{0,62}$", name):
            return error(HTTPStatus.BAD_REQUEST, "Invalid service_name or service_type")
        if plan not in PLANS:
            return error(HTTPStatus.BAD_REQUEST, f"Service plan {plan!r} is not available")
        if cloud not in CLOUDS:
            return error(HTTPStatus.BAD_REQUEST, f"Cloud {cloud!r} is not available")
        if name in self.services:
            return error(HTTPStatus.CONFLICT, f"Service name is already in use in this project: {name}")
        base = name.replace("-", "_")
        service = Service(
            name=name,
            plan=plan,
            cloud=cloud,
            user_config=dict(body.get("user_config") or {}),
            termination_protection=bool(body.get("termination_protection")),
            admin_user=f"avnadmin_{base}",
            admin_password=secrets.token_urlsafe(18),
            database=f"defaultdb_{base}",
            maintenance={**(body.get("maintenance") or {"dow": "sunday", "time": "03:00:00"}), "updates": []},
        )
        with self.superuser() as admin:
            admin.execute(
                sql.SQL("CREATE ROLE {} WITH LOGIN CREATEROLE PASSWORD {}").format(
                    sql.Identifier(service.admin_user), sql.Literal(service.admin_password)
                )
            )
            admin.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(service.database), sql.Identifier(service.admin_user)
                )
            )
        self.services[name] = service
        return HTTPStatus.OK, {"service": self._service_json(service)}

    def update(self, service: Service, body: dict[str, Any]) -> tuple[int, dict]:
        if (
            body.get("powered") is False
            and service.termination_protection
            and body.get("termination_protection") is not False
        ):
            return error(HTTPStatus.FORBIDDEN, PROTECTED)
        if body.get("plan") and body["plan"] not in PLANS:
            return error(HTTPStatus.BAD_REQUEST, f"Service plan {body['plan']!r} is not available")
        rebuild = False
        if body.get("plan") and body["plan"] != service.plan:
            service.plan, rebuild = body["plan"], True
        if body.get("cloud") and body["cloud"] != service.cloud:
            service.cloud, rebuild = body["cloud"], True
        if body.get("termination_protection") is not None:
            service.termination_protection = bool(body["termination_protection"])
        if body.get("maintenance"):
            service.maintenance = {**service.maintenance, **body["maintenance"]}
        if body.get("user_config"):
            service.user_config.update(body["user_config"])
        if body.get("powered") is not None:
            service.powered = bool(body["powered"])
        if rebuild:
            service.changed = time.monotonic()
        return HTTPStatus.OK, {"service": self._service_json(service)}

    def delete(self, service: Service) -> tuple[int, dict]:
        if service.termination_protection:
            return error(HTTPStatus.FORBIDDEN, PROTECTED)
        with self.superuser() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(service.database)))
            # What the service's admin created elsewhere goes with the service, as on Aiven.
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(service.admin_user)))
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(service.admin_user)))
        del self.services[service.name]
        return HTTPStatus.OK, {"message": "Service deleted"}

    def handle(self, method: str, path: str, query: str, headers: Any, body: Any) -> tuple[int, dict]:
        self.requests.append((method, path))
        if body is not None:
            self.bodies.append((method, path, body))
        scheme, _, presented = (headers.get("Authorization") or "").partition(" ")
        with self.lock:
            if scheme not in ("aivenv1", "Bearer") or not self.token_used(presented):
                return error(HTTPStatus.FORBIDDEN, "Invalid token")
            minted = self.access_tokens.get(presented)
            if minted is not None:
                minted.last_used = self.now()
            self.authorized.append((method, path, "minted" if minted else "long-lived"))
        parts = path.strip("/").split("/")
        if parts[:2] == ["v1", "access_token"]:
            with self.lock:
                if len(parts) == 2 and method == "POST":
                    return self.create_token(body or {})
                if len(parts) == 2 and method == "GET":
                    return HTTPStatus.OK, {"tokens": [self._token_json(t) for t in self.access_tokens.values()]}
                if len(parts) == 3 and method == "DELETE":
                    return self.revoke_token(parts[2])
            return self._unknown(method, path)
        if parts[:2] == ["v1", "project"] and len(parts) == 2 and method == "GET":
            return HTTPStatus.OK, {"projects": [self._project_json()], "project_membership": {self.project: "admin"}}
        if parts[:2] != ["v1", "project"] or len(parts) < 3:
            return self._unknown(method, path)
        if parts[2] != self.project:
            return error(HTTPStatus.NOT_FOUND, f"Project does not exist: {parts[2]}", "project_not_found")
        rest = parts[3:]
        with self.lock:
            return self._project_route(method, path, rest, query, body)

    def _project_route(self, method: str, path: str, rest: list[str], query: str, body: Any) -> tuple[int, dict]:
        if rest == [] and method == "GET":
            return HTTPStatus.OK, {"project": self._project_json()}
        if rest == ["kms", "ca"] and method == "GET":
            return HTTPStatus.OK, {"certificate": self.ca_pem}
        if rest == ["static-ips"] and method == "GET":
            return HTTPStatus.OK, {"static_ips": []}
        if rest[:2] == ["service-types", "pg"] and rest[2:3] == ["plans"] and method == "GET":
            if len(rest) == 3:
                return HTTPStatus.OK, {"service_plans": [self._plan_json(p) for p in PLANS]}
            if len(rest) == 4:
                if rest[3] not in PLANS:
                    return error(HTTPStatus.NOT_FOUND, f"Service plan {rest[3]!r} does not exist for service type pg")
                return HTTPStatus.OK, self._plan_json(rest[3])
        if rest == ["service"] and method == "POST":
            return self.create(body or {})
        if rest == ["service"] and method == "GET":
            return HTTPStatus.OK, {"services": [self._service_json(s, False) for s in self.services.values()]}
        if rest[:1] == ["service"] and len(rest) >= 2:
            service = self.services.get(rest[1])
            if service is None:
                return error(HTTPStatus.NOT_FOUND, f"Service {rest[1]} does not exist", "service_not_found")
            if len(rest) == 2:
                if method == "GET":
                    return HTTPStatus.OK, {"service": self._service_json(service, "include_secrets=true" in query)}
                if method == "PUT":
                    return self.update(service, body or {})
                if method == "DELETE":
                    return self.delete(service)
            if rest[2:3] == ["user"] and len(rest) == 4 and method == "PUT":
                return self.reset_credentials(service, rest[3], body or {})
            if rest[2:] == ["tags"]:
                if method == "GET":
                    return HTTPStatus.OK, {"tags": service.tags}
                if method == "PUT":
                    service.tags = dict((body or {}).get("tags") or {})
                    return HTTPStatus.OK, {"message": "tags updated"}
        return self._unknown(method, path)

    def _unknown(self, method: str, path: str) -> tuple[int, dict]:
        self.unknown.append(f"{method} {path}")
        return error(HTTPStatus.NOT_IMPLEMENTED, f"the Aiven stand-in does not know {method} {path}")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw.strip() else None
                path, _, query = self.path.partition("?")
                status, answer = stand_in.handle(self.command, path, query, self.headers, body)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

            def log_message(self, *_args: Any) -> None:  # keep test output quiet
                pass

        return Handler
