"""Which TLS server name (SNI) the upstream sees, against the real gateway.

Before addon/upstream_sni.py, a tunnel to the upstream's own host:port handed the client's SNI
on to the upstream handshake (mitmproxy does so when the request goes where the tunnel went): on a
front that routes by SNI, the client picked which backend received the injected credential. The
upstream name now comes from the policy's connection alone, and a ClientHello naming another host
than the tunnel's target is refused 421 `misdirected_request` before anything goes upstream.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import pytest

from tests.hostile.conftest import Hostile, tunnel


def _exchange(sock: socket.socket, host: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode()
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data
    )
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    head, _, rest = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        parsed = json.loads(rest) if rest.strip() else {}
    except ValueError:
        parsed = {"raw": rest.decode("latin-1")}
    return status, parsed if isinstance(parsed, dict) else {"value": parsed}


@pytest.mark.parametrize("server_name", ["evil.example", "localhost"])
def test_a_client_sni_naming_another_host_than_the_tunnel_is_refused(
    hostile: Hostile, mint: Callable[..., dict[str, Any]], server_name: str
) -> None:
    """The tunnel goes to 127.0.0.1:<upstream port> (cohere-test's upstream); the ClientHello names
    another host. Nothing reaches the upstream, not even a TLS handshake."""
    up = hostile.upstream
    names, received = len(up.server_names), len(up.received)
    with tunnel(hostile, mint("cohere-test")["token"], server_name=server_name) as sock:
        status, answer = _exchange(sock, f"127.0.0.1:{up.port}", "/v2/rerank",
                                   {"model": "rerank-v3.5", "query": "q", "documents": ["a", "b"]})
    assert (status, answer.get("code")) == (421, "misdirected_request"), answer
    assert list(up.server_names)[names:] == [] and len(up.received) == received


@pytest.mark.parametrize("server_name", ["", "LOCALHOST", "localhost.", None])
def test_the_upstream_sni_is_the_connections_upstream_host(
    hostile: Hostile, mint: Callable[..., dict[str, Any]], server_name: str | None
) -> None:
    """voyage-test's upstream is https://localhost:<port> (its own sample upstream); the tunnel goes
    there, and whatever spelling of that name the client sends (or none), the upstream handshake
    names `localhost`."""
    up = hostile.voyage
    assert up is not None
    names, received = len(up.server_names), len(up.received)
    with tunnel(hostile, mint("voyage-test")["token"], target="localhost", server_name=server_name,
                port=up.port) as sock:
        status, answer = _exchange(sock, f"localhost:{up.port}", "/v1/rerank",
                                   {"model": "rerank-2", "query": "q", "documents": ["a q", "b"]})
    assert status == 200, answer
    assert answer["data"][0]["index"] == 0  # the Voyage answer, from voyage-test's own upstream
    assert list(up.server_names)[names:] == ["localhost"]
    assert len(up.received) == received + 1
