"""A dynamic resource for an Aiven for PostgreSQL service, over the Aiven REST
API with Aiven's own client library (aiven-client).

The API token comes from the `token` input (a secret) or from AIVEN_TOKEN in
the provider process's environment. `api_url` is the API base URL
(https://api.aiven.io unless a stand-in is used, as the tests do).
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

from aiven.client.client import AivenClient, Error as AivenError
from pulumi import Input, Output, ResourceOptions
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from providers._shared import changed, gone

RUNNING_TIMEOUT_SECONDS = 30 * 60
POLL_SECONDS = float(os.environ.get("PGCREDS_AIVEN_POLL_SECONDS", "10"))
REPLACE_ON = ("project", "service_name")
UPDATE_ON = ("api_url", "cloud", "plan", "pg_version", "maintenance", "termination_protection")


def _client(props: dict) -> AivenClient:
    token = props.get("token") or os.environ.get("AIVEN_TOKEN")
    if not token:
        raise ValueError("no Aiven API token: set pgcreds:aivenToken (a secret) or export AIVEN_TOKEN")
    client = AivenClient(props["api_url"], request_timeout=60)
    client.set_auth_token(token)
    return client


def _wait_until_running(client: AivenClient, props: dict) -> dict[str, Any]:
    deadline = time.monotonic() + RUNNING_TIMEOUT_SECONDS
    while True:
        service = client.get_service(props["project"], props["service_name"])
        if service["state"] == "RUNNING":
            return service
        if time.monotonic() > deadline:
            raise TimeoutError(f"Aiven service {props['service_name']!r} is still {service['state']} after "
                               f"{RUNNING_TIMEOUT_SECONDS // 60} minutes; run `pulumi up` again to go on waiting")
        time.sleep(POLL_SECONDS)


def _outputs(client: AivenClient, props: dict, service: dict) -> dict[str, Any]:
    params = service["service_uri_params"]
    return {
        **props,
        "host": params["host"],
        "port": int(params["port"]),
        "database": params["dbname"],
        "admin_user": params["user"],
        "admin_password": params["password"],
        "ca_certificate": client.get_project_ca(props["project"])["certificate"],
        "state": service["state"],
    }


def _user_config(props: dict) -> dict[str, Any]:
    return {"pg_version": str(props["pg_version"])}


class _PgProvider(ResourceProvider):
    def create(self, props: dict) -> CreateResult:
        client = _client(props)
        try:
            client.get_service(props["project"], props["service_name"])
        except AivenError as error:
            if error.status != 404:
                raise
            client.create_service(props["project"], props["service_name"], "pg", props["plan"], cloud=props["cloud"],
                                  user_config=_user_config(props),
                                  termination_protection=bool(props["termination_protection"]))
        else:
            # A service left by an interrupted run is adopted and brought to the settings.
            self._update(client, props)
        if props.get("maintenance"):
            client.update_service(props["project"], props["service_name"], maintenance=props["maintenance"])
        service = _wait_until_running(client, props)
        return CreateResult(f"{props['project']}/{props['service_name']}", _outputs(client, props, service))

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        replaces = changed(olds, news, REPLACE_ON)
        changes = replaces or changed(olds, news, UPDATE_ON + ("token",))
        return DiffResult(changes=bool(changes), replaces=replaces, delete_before_replace=True)

    @staticmethod
    def _update(client: AivenClient, props: dict) -> None:
        client.update_service(props["project"], props["service_name"], cloud=props["cloud"], plan=props["plan"],
                              user_config=_user_config(props), maintenance=props.get("maintenance") or None,
                              termination_protection=bool(props["termination_protection"]))

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        client = _client(news)
        self._update(client, news)
        return UpdateResult(_outputs(client, news, _wait_until_running(client, news)))

    def read(self, id_: str, props: dict) -> ReadResult:
        client = _client(props)
        try:
            service = client.get_service(props["project"], props["service_name"])
        except AivenError as error:
            if error.status == 404:
                return gone()
            raise
        return ReadResult(id_, {**_outputs(client, props, service), "plan": service["plan"],
                                "cloud": service["cloud_name"],
                                "termination_protection": service["termination_protection"]})

    def delete(self, _id: str, props: dict) -> None:
        client = _client(props)
        try:
            service = client.get_service(props["project"], props["service_name"])
        except AivenError as error:
            if error.status == 404:
                return
            raise
        if service.get("termination_protection"):
            raise ValueError(f"Aiven service {props['service_name']!r} has termination protection: set "
                             "pgcreds:aivenTerminationProtection to false and run `pulumi up` first, then destroy")
        client.delete_service(props["project"], props["service_name"])


class AivenPg(Resource, module="aiven", name="Pg"):
    """An Aiven for PostgreSQL service; `admin_password` and `ca_certificate` are outputs."""

    host: Output[str]
    port: Output[int]
    database: Output[str]
    admin_user: Output[str]
    admin_password: Output[str]
    ca_certificate: Output[str]

    def __init__(self, resource_name: str, *, api_url: str, project: str, cloud: str, plan: str,
                 service_name: str, pg_version: str, termination_protection: bool,
                 maintenance: Optional[dict[str, str]] = None, token: Optional[Input[str]] = None,
                 opts: Optional[ResourceOptions] = None):
        super().__init__(_PgProvider(), resource_name, {
            "api_url": api_url, "project": project, "cloud": cloud, "plan": plan, "service_name": service_name,
            "pg_version": pg_version, "termination_protection": termination_protection, "maintenance": maintenance,
            "token": token, "host": None, "port": None, "database": None, "admin_user": None,
            "admin_password": None, "ca_certificate": None, "state": None,
        }, ResourceOptions.merge(opts, ResourceOptions(additional_secret_outputs=["admin_password", "token"])))
