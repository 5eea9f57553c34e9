"""Traffic that mitmproxy would relay without running a hook, against the real gateway.

Before addon/http_only.py, a tunnel whose first bytes did not look like HTTP to mitmproxy (a
request line written in two pieces, a leading CRLF, no ALPN) became a raw TCP relay: the request
reached the upstream with no token, no inspection and no record. Each case here must meet the
chain or be refused, and the upstream must see nothing unchecked.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest

from jitgate.devstack.policy import secret_id
from tests.hostile.conftest import Hostile, answer_of, status_and_code, tunnel
from tests.reliability.harness import client, full_gateway, write_policy


def _request(h: Hostile, *, key: str = "placeholder") -> bytes:
    body = json.dumps({"model": "rerank-v3.5", "query": "q", "documents": ["a", "b"]}).encode()
    head = (
        f"POST /v2/rerank HTTP/1.1\r\nHost: 127.0.0.1:{h.upstream.port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


@pytest.mark.parametrize("alpn", [None, ["http/1.1"]], ids=["no-alpn", "alpn"])
def test_a_request_line_in_two_pieces_without_a_token_is_refused(hostile: Hostile, alpn: list[str] | None) -> None:
    """The bypass as found: the first TLS record ends before the request line's newline."""
    mark, opened = len(hostile.upstream.received), hostile.upstream.connections
    key = hostile.stack.secrets[secret_id("cohere-test")]  # even the real upstream key does not help
    with tunnel(hostile, None, alpn=alpn) as sock:
        request = _request(hostile, key=key)
        sock.sendall(request[:15])  # "POST /v2/rerank": no newline yet
        time.sleep(0.3)
        sock.sendall(request[15:])
        answer = answer_of(sock)
    assert status_and_code(answer) == (407, "token_required")
    assert list(hostile.upstream.received)[mark:] == []
    assert hostile.upstream.connections == opened  # not a byte went upstream


def test_a_request_line_in_two_pieces_with_a_token_goes_through_the_chain(
    hostile: Hostile, mint: Callable[..., dict[str, Any]]
) -> None:
    token = mint("cohere-test")["token"]
    mark = len(hostile.upstream.received)
    with tunnel(hostile, token) as sock:
        request = _request(hostile)
        sock.sendall(request[:15])
        time.sleep(0.3)
        sock.sendall(request[15:])
        answer = answer_of(sock)
    assert status_and_code(answer)[0] == 200, answer[:300]
    [seen] = list(hostile.upstream.received)[mark:]
    # The chain ran: the real key was injected and the JIT token never left the gateway.
    assert hostile.upstream.authorized(seen.headers)
    assert all(token not in value for value in seen.headers.values())


@pytest.mark.parametrize(
    ("name", "first", "tls"),
    [
        ("leading-crlf", b"\r\n", True),
        ("ssh-greeting", b"SSH-2.0-OpenSSH_9.6\r\n", True),
        ("binary", b"\x00\x01\x02\x03", True),
        ("binary-plaintext-tunnel", b"\x00\x01\x02\x03", False),
    ],
)
def test_bytes_that_do_not_look_like_http_are_never_relayed(
    hostile: Hostile, name: str, first: bytes, tls: bool
) -> None:
    mark, opened = len(hostile.upstream.received), hostile.upstream.connections
    with tunnel(hostile, None, tls=tls) as sock:
        sock.sendall(first + _request(hostile))
        answer = answer_of(sock, timeout=3.0)
    if answer:
        assert answer.startswith(b"HTTP/1.1 4"), answer[:200]  # an HTTP refusal, never the upstream's answer
    assert list(hostile.upstream.received)[mark:] == []
    # Not even a connection: a raw relay would have opened one whatever the upstream made of the bytes.
    assert hostile.upstream.connections == opened


@pytest.mark.parametrize("upgrade", ["websocket", "tcp", "h2c, websocket"])
def test_a_protocol_upgrade_is_refused(
    hostile: Hostile, mint: Callable[..., dict[str, Any]], upgrade: str
) -> None:
    token = mint("cohere-test")["token"]
    mark = len(hostile.upstream.received)
    headers = {
        "Authorization": "Bearer placeholder",
        "Connection": "Upgrade",
        "Upgrade": upgrade,
        "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
        "Sec-WebSocket-Version": "13",
    }
    with client(hostile.gateway, hostile.bundle, token) as c:
        resp = c.post(
            f"{hostile.upstream.url}/v2/rerank", json={"model": "m", "query": "q", "documents": ["a"]}, headers=headers
        )
    assert (resp.status_code, resp.json()["code"]) == (403, "upgrade_not_allowed")
    assert list(hostile.upstream.received)[mark:] == []


@pytest.mark.parametrize(
    ("option", "value"), [("ignore_hosts", ".*"), ("tcp_hosts", ".*"), ("stream_large_bodies", "1k")]
)
def test_options_that_exempt_traffic_stop_the_start(
    tmp_path: Path, hostile: Hostile, oidc_issuer: Any, option: str, value: str
) -> None:
    with pytest.raises(RuntimeError) as info:
        gw = full_gateway(
            tmp_path, policy=write_policy(tmp_path, oidc_issuer.url, hostile.upstream), upstream=hostile.upstream,
            broker=hostile.broker, stack=hostile.stack, moto=hostile.moto, gateway_id="exempt-test",
            extra_args=["--set", f"{option}={value}"],
        )
        gw.stop()
    assert f"{option} lets traffic past the jitgate chain" in str(info.value)


def _h2_post(sock: ssl.SSLSocket, h: Hostile, body: bytes, trailers: list[tuple[str, str]]) -> tuple[int, bytes]:
    """One HTTP/2 POST of a rerank (with `trailers` after the body, if any): (status, body)."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, [
        (":method", "POST"), (":path", "/v2/rerank"), (":scheme", "https"),
        (":authority", f"127.0.0.1:{h.upstream.port}"), ("authorization", "Bearer placeholder"),
        ("content-type", "application/json"), ("content-length", str(len(body))), ("te", "trailers"),
    ])
    conn.send_data(stream, body, end_stream=not trailers)
    if trailers:
        conn.send_headers(stream, trailers, end_stream=True)
    sock.sendall(conn.data_to_send())
    sock.settimeout(10)
    status, data = 0, b""
    while True:
        chunk = sock.recv(65536)
        assert chunk, "the gateway closed the connection before the answer ended"
        for event in conn.receive_data(chunk):
            if isinstance(event, h2.events.ResponseReceived):
                status = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                data += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, stream)
            elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                return status, data
        sock.sendall(conn.data_to_send())


def test_request_trailers_are_refused_before_anything_goes_upstream(
    hostile: Hostile, mint: Callable[..., dict[str, Any]]
) -> None:
    """HTTP/2 trailers are scanned by nobody, so a request with them is refused before it goes on."""
    token = mint("cohere-test")["token"]
    fake_key = "AKIA" + "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))
    body = json.dumps({"model": "rerank-v3.5", "query": "q", "documents": ["a", "b"]}).encode()
    mark, opened = len(hostile.upstream.received), hostile.upstream.connections
    with tunnel(hostile, token, alpn=["h2"]) as sock:
        assert sock.selected_alpn_protocol() == "h2"
        status, answer = _h2_post(sock, hostile, body, [("x-exfil", fake_key)])
    assert (status, json.loads(answer)["code"]) == (403, "trailers_not_allowed")
    assert fake_key.encode() not in answer
    assert list(hostile.upstream.received)[mark:] == [] and hostile.upstream.connections == opened
    # The same request without trailers goes through the chain over HTTP/2.
    with tunnel(hostile, token, alpn=["h2"]) as sock:
        status, answer = _h2_post(sock, hostile, body, [])
    assert status == 200, answer[:200]
    assert len(list(hostile.upstream.received)[mark:]) == 1
