"""A local stand-in for the part of the Aiven REST API that an Aiven for
PostgreSQL service needs: create, read, update and delete of a service (its
state moving from REBUILDING to RUNNING), its connection parameters and the
project's CA certificate. Answers have the shapes of the real API.

Each service is backed by a real database and a non-superuser admin role
(CREATEROLE, like Aiven's avnadmin) on the local PostgreSQL server, which
serves TLS with a test CA, so that clients can verify the server (verify-full).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional

import psycopg
from psycopg import sql

SERVICE_PATH = re.compile(r"^/v1/project/([^/]+)/service(?:/([^/]+))?$")
CA_PATH = re.compile(r"^/v1/project/([^/]+)/kms/ca$")
REBUILD_SECONDS = 0.5


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
    maintenance: dict[str, str] = field(default_factory=lambda: {"dow": "sunday", "time": "03:00:00"})
    created: float = field(default_factory=time.monotonic)


class AivenStandIn:
    """Serves one project on 127.0.0.1 (port chosen by the kernel) until `stop()`."""

    def __init__(self, project: str, token: str, pg_host: str, pg_port: int, ca_pem: str,
                 superuser: Callable[[], psycopg.Connection]):
        self.project, self.token = project, token
        self.pg_host, self.pg_port, self.ca_pem = pg_host, pg_port, ca_pem
        self.superuser = superuser
        self.services: dict[str, Service] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> "AivenStandIn":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- the API ------------------------------------------------------------

    def _service_json(self, service: Service) -> dict[str, Any]:
        running = time.monotonic() - service.created >= REBUILD_SECONDS
        params = {"host": self.pg_host, "port": str(self.pg_port), "user": service.admin_user,
                  "password": service.admin_password, "dbname": service.database, "sslmode": "require"}
        return {
            "service_name": service.name, "service_type": "pg", "plan": service.plan, "cloud_name": service.cloud,
            "state": "RUNNING" if running else "REBUILDING", "termination_protection": service.termination_protection,
            "user_config": service.user_config, "maintenance": service.maintenance,
            "service_uri": (f"postgres://{service.admin_user}:{service.admin_password}@{self.pg_host}:"
                            f"{self.pg_port}/{service.database}?sslmode=require"),
            "service_uri_params": params,
            "users": [{"username": service.admin_user, "password": service.admin_password, "type": "primary"}],
            "components": [{"component": "pg", "host": self.pg_host, "port": self.pg_port, "route": "dynamic"}],
        }

    def create(self, body: dict[str, Any]) -> tuple[int, dict]:
        name = body.get("service_name", "")
        if body.get("service_type") != "pg" or not re.match(r"^[a-z][a-z0-9-]{0,62}$", name):
            return HTTPStatus.BAD_REQUEST, {"message": "invalid service_name or service_type", "errors": []}
        if name in self.services:
            return HTTPStatus.CONFLICT, {"message": f"Service {name} already exists", "errors": []}
        base = name.replace("-", "_")
        service = Service(name=name, plan=body["plan"], cloud=body.get("cloud") or "google-europe-west1",
                          user_config=body.get("user_config") or {},
                          termination_protection=bool(body.get("termination_protection")),
                          admin_user=f"avnadmin_{base}", admin_password=secrets.token_urlsafe(18),
                          database=f"defaultdb_{base}")
        with self.superuser() as admin:
            admin.execute(sql.SQL("CREATE ROLE {} WITH LOGIN CREATEROLE PASSWORD {}").format(
                sql.Identifier(service.admin_user), sql.Literal(service.admin_password)))
            admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(service.database), sql.Identifier(service.admin_user)))
        self.services[name] = service
        return HTTPStatus.OK, {"service": self._service_json(service)}

    def update(self, service: Service, body: dict[str, Any]) -> tuple[int, dict]:
        for key in ("plan", "cloud", "termination_protection", "maintenance"):
            if body.get(key) is not None:
                setattr(service, key, body[key])
        if body.get("user_config"):
            service.user_config.update(body["user_config"])
        return HTTPStatus.OK, {"service": self._service_json(service)}

    def delete(self, service: Service) -> tuple[int, dict]:
        if service.termination_protection:
            return HTTPStatus.FORBIDDEN, {"message": "Service is protected against termination and shutdown. "
                                                     "Remove termination protection first.", "errors": []}
        with self.superuser() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(service.database)))
            # What the service's admin created elsewhere goes with the service, as on Aiven.
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(service.admin_user)))
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(service.admin_user)))
        del self.services[service.name]
        return HTTPStatus.OK, {"message": "deleted"}

    def handle(self, method: str, path: str, headers: Any, body: Optional[dict]) -> tuple[int, dict]:
        self.requests.append((method, path))
        if headers.get("Authorization") != f"aivenv1 {self.token}":
            return HTTPStatus.FORBIDDEN, {"message": "Invalid token", "errors": [{"status": 403}]}
        if match := CA_PATH.match(path):
            if match.group(1) != self.project:
                return HTTPStatus.NOT_FOUND, {"message": "Project does not exist", "errors": []}
            return HTTPStatus.OK, {"certificate": self.ca_pem}
        match = SERVICE_PATH.match(path)
        if not match or match.group(1) != self.project:
            return HTTPStatus.NOT_FOUND, {"message": "Not found", "errors": []}
        name = match.group(2)
        with self.lock:
            if name is None and method == "POST":
                return self.create(body or {})
            service = self.services.get(name or "")
            if service is None:
                return HTTPStatus.NOT_FOUND, {"message": f"Service {name} does not exist", "errors": []}
            if method == "GET":
                return HTTPStatus.OK, {"service": self._service_json(service)}
            if method == "PUT":
                return self.update(service, body or {})
            if method == "DELETE":
                return self.delete(service)
        return HTTPStatus.METHOD_NOT_ALLOWED, {"message": "Method not allowed", "errors": []}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                status, answer = stand_in.handle(self.command, self.path.split("?")[0], self.headers, body)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, *_args: Any) -> None:  # keep test output quiet
                pass

        return Handler
