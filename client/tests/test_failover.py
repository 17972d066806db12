"""The failover adapter against real HTTP servers on loopback (plain HTTP: the
adapter's logic, not TLS, is under test; the raft cluster test uses TLS): a dead
node, a node in an election (503), and a request that no node serves in time."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import hvac
import hvac.exceptions
import pytest
import requests

from pgcreds_client import VaultAddresses
from pgcreds_client.failover import FailoverAdapter


class Node:
    """An HTTP server that answers every request with `status` and a JSON body naming itself."""

    def __init__(self, name: str, status: int = 200) -> None:
        self.name, self.status, self.requests = name, status, 0
        node = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                node.requests += 1
                body = json.dumps({"data": {"node": node.name}, "errors": ["no active node"]}).encode()
                self.send_response(node.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started = [Node("a"), Node("b")]
    yield started
    for node in started:
        node.server.shutdown()


def dead_address() -> str:
    """An address nothing listens on (a port bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def client(addresses: VaultAddresses) -> hvac.Client:
    return hvac.Client(url=addresses.current, timeout=2, adapter=lambda **kwargs: FailoverAdapter(addresses, **kwargs))


def test_a_dead_node_is_passed_over_and_the_next_request_starts_where_the_last_succeeded(nodes: list[Node]):
    addresses = VaultAddresses(f"{dead_address()}, {nodes[0].address}", failover_seconds=5)
    assert client(addresses).read("secret/x")["data"]["node"] == "a"
    assert addresses.current == nodes[0].address and addresses.failovers == 1
    # A new client (a new login) starts at the node that answered, not at the dead one.
    assert client(addresses).read("secret/x")["data"]["node"] == "a"
    assert addresses.failovers == 1


def test_a_node_in_an_election_is_tried_again_until_one_serves(nodes: list[Node]):
    electing, serving = nodes
    electing.status = 503
    addresses = VaultAddresses([electing.address, serving.address], failover_seconds=5)
    assert client(addresses).read("secret/x")["data"]["node"] == "b"
    assert electing.requests == 1 and serving.requests == 1


def test_a_single_address_is_waited_for_through_an_election(nodes: list[Node]):
    node = nodes[0]
    node.status = 503
    threading.Timer(0.7, lambda: setattr(node, "status", 200)).start()
    addresses = VaultAddresses(node.address, failover_seconds=5)
    assert client(addresses).read("secret/x")["data"]["node"] == "a"
    assert node.requests >= 3


def test_when_no_node_serves_in_time_the_error_is_the_last_one(nodes: list[Node]):
    nodes[0].status = 503
    addresses = VaultAddresses([dead_address(), nodes[0].address], failover_seconds=1)
    with pytest.raises((hvac.exceptions.VaultDown, requests.ConnectionError)):
        client(addresses).read("secret/x")
    assert addresses.failovers >= 3


def test_a_refusal_is_not_tried_elsewhere(nodes: list[Node]):
    """403 is Vault's answer, not an outage: asking another node would get the same."""
    nodes[0].status = 403
    addresses = VaultAddresses([nodes[0].address, nodes[1].address], failover_seconds=5)
    with pytest.raises(hvac.exceptions.Forbidden):
        client(addresses).read("secret/x")
    assert nodes[1].requests == 0 and addresses.failovers == 0


def test_no_address_is_a_clear_error():
    with pytest.raises(ValueError, match="PGCREDS_VAULT_ADDRS"):
        VaultAddresses(" , ")
