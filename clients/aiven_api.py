"""The few Aiven REST API calls the deploy path makes itself, outside Pulumi: a
run's short-lived token minted from the long-lived one and revoked at the run's
end, a check of a token, the service admin's credential reset. The aiven provider
makes every other call. Plain HTTP with the standard library: these are four
requests, and the deploy session must start fast.

Request and answer shapes are Aiven's (`AccessTokenCreate`, `AccessTokenRevoke`,
`ServiceUserCredentialsModify`), as `tests/aiven_standin` implements them.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

DEFAULT_API_URL = "https://api.aiven.io"
# The shortest life Aiven gives a user access token (its API refuses less than 600 s).
MIN_TOKEN_SECONDS = 600
TIMEOUT_SECONDS = 30


class AivenApiError(Exception):
    """Aiven answered with an error: its status and its own message."""

    def __init__(self, status: int, message: str, call: str):
        super().__init__(f"Aiven refused {call}: {message} (HTTP {status})")
        self.status, self.message = status, message


@dataclass(frozen=True)
class MintedToken:
    full_token: str
    prefix: str


def stored_token(secret: dict) -> tuple[str, str]:
    """(API address, token) of the long-lived token as Vault's KV secret holds it."""
    return secret.get("api_url") or DEFAULT_API_URL, secret["token"]


def _call(api_url: str, token: str, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        api_url.rstrip("/") + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"aivenv1 {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:
            return json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as refused:
        try:
            message = json.loads(refused.read() or b"{}").get("message") or refused.reason
        except ValueError:
            message = refused.reason
        raise AivenApiError(refused.code, str(message), f"{method} {path}") from None
    except (urllib.error.URLError, OSError) as unreachable:
        raise AivenApiError(0, f"the API at {api_url} does not answer ({unreachable})", f"{method} {path}") from None


def mint_token(api_url: str, token: str, description: str, max_age_seconds: int = MIN_TOKEN_SECONDS) -> MintedToken:
    """A user access token that dies `max_age_seconds` after its last use (so a long
    `pulumi up` that keeps calling the API keeps it, and an idle one loses it)."""
    answer = _call(
        api_url,
        token,
        "POST",
        "/v1/access_token",
        {"description": description, "max_age_seconds": max_age_seconds, "extend_when_used": True},
    )
    return MintedToken(answer["full_token"], answer["token_prefix"])


def revoke_token(api_url: str, token: str, prefix: str) -> None:
    _call(api_url, token, "DELETE", f"/v1/access_token/{urllib.parse.quote(prefix, safe='')}")


def check_token(api_url: str, token: str) -> None:
    """Raises AivenApiError unless Aiven accepts the token (it lists the projects)."""
    _call(api_url, token, "GET", "/v1/project")


def reset_service_password(api_url: str, token: str, project: str, service: str, username: str) -> None:
    """A new random password for a service user, which Aiven sets on the server and
    keeps; the old one stops working at once."""
    path = "/".join(urllib.parse.quote(part, safe="") for part in ("", "v1", "project", project, "service", service))
    _call(
        api_url,
        token,
        "PUT",
        f"{path}/user/{urllib.parse.quote(username, safe='')}",
        {"operation": "reset-credentials"},
    )
