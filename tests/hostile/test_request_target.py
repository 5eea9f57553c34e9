"""What a request asks for is what the gateway checks (issue 16, items 8 to 10), against the real
gateway: raw requests with a valid token over CONNECT tunnels, so no client library tidies them.

Before: `post /v2/rerank` passed the scope as POST and reached the upstream as `post`; override
headers (X-HTTP-Method-Override, X-Original-URL, X-Forwarded-Host, ...) went on unchanged; a Host
naming another host was answered 200 and recorded under that host; a request without Host went on
without one; an absolute-form URI naming another authority inside a tunnel was rewritten and sent
on. Each is now refused before anything goes upstream. The path tricks and the other connections'
hosts and IP forms at the end were already refused; their tests keep them so.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

import pytest

from jitgate.devstack.policy import READER_SUB
from tests.hostile.conftest import Hostile, answer_of, connect, status_and_code, tunnel
from tests.reliability.harness import client, raw_record_bytes, records, wait_for

_BODY = json.dumps({"model": "rerank-v3.5", "query": "q", "documents": ["a", "b"]})


def _head(line: str, hosts: list[str], headers: dict[str, str] | None = None, body: str = _BODY) -> bytes:
    """One HTTP/1.1 request as written: `line` is its request line, `hosts` its Host headers."""
    fields = [f"Host: {h}" for h in hosts] + [f"{k}: {v}" for k, v in (headers or {}).items()]
    fields += ["Content-Type: application/json", f"Content-Length: {len(body)}", "Connection: close"]
    return (line + "\r\n" + "".join(f + "\r\n" for f in fields) + "\r\n" + body).encode()


def _send(h: Hostile, token: str, request: bytes, *, host: str = "127.0.0.1") -> tuple[int, str | None, str]:
    """(status, code, the client address a record names) of `request` sent over a fresh tunnel to `host`."""
    with tunnel(h, token, target=host) as sock:
        address, port = sock.getsockname()[:2]
        peer = f"{address}:{port}"
        sock.sendall(request)
        status, code = status_and_code(answer_of(sock))
    return status, code, peer


def _nothing_went_upstream(h: Hostile, mark: int, opened: int) -> None:
    assert list(h.upstream.received)[mark:] == []
    assert h.upstream.connections == opened  # not even a connection (mitmproxy connects lazily)


def _record_of(h: Hostile, peer: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def _settled() -> bool:
        found[:] = [r for r in records(h.moto, h.stack.bucket, h.gateway_id, h.spool) if r["client"] == peer]
        return bool(found)

    assert wait_for(_settled, 10), f"no record of {peer}"
    [record] = found
    return record


# -- item 8: the method ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["post", "Post", "pOST"])
def test_a_method_that_is_no_upper_case_token_is_refused(hostile: Hostile, token: str, method: str) -> None:
    mark, opened = len(hostile.upstream.received), hostile.upstream.connections
    port = hostile.upstream.port
    status, code, peer = _send(hostile, token, _head(f"{method} /v2/rerank HTTP/1.1", [f"127.0.0.1:{port}"]))
    assert (status, code) == (400, "method_not_allowed")
    _nothing_went_upstream(hostile, mark, opened)
    record = _record_of(hostile, peer)
    assert (record["error"], record["decision"]) == ("method_not_allowed", "blocked")


# -- item 9: override headers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
        ("X-Method-Override", "DELETE"),
        ("X-Original-URL", "/v2/chat"),
        ("X-Rewrite-URL", "/v2/chat"),
        ("X-Forwarded-Host", "evil.example"),
        ("Forwarded", "host=evil.example"),
        ("X_HTTP_METHOD_OVERRIDE", "DELETE"),  # CGI and WSGI servers read it as X-HTTP-Method-Override
    ],
)
def test_a_header_that_overrides_method_url_or_host_is_refused(
    hostile: Hostile, token: str, name: str, value: str
) -> None:
    mark, opened = len(hostile.upstream.received), hostile.upstream.connections
    port = hostile.upstream.port
    request = _head("POST /v2/rerank HTTP/1.1", [f"127.0.0.1:{port}"], {name: value, "Authorization": "Bearer x"})
    status, code, _ = _send(hostile, token, request)
    assert (status, code) == (403, "header_not_allowed")
    _nothing_went_upstream(hostile, mark, opened)


# -- item 10: Host and authority ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "hosts", "status", "code"),
    [
        ("POST /v2/rerank HTTP/1.1", ["evil-{mark}.example"], 403, "host_not_allowed"),
        ("POST /v2/rerank HTTP/1.1", ["evil-{mark}.example:{port}"], 403, "host_not_allowed"),
        ("POST /v2/rerank HTTP/1.1", ["localhost:{port}"], 403, "host_not_allowed"),  # store-test's host
        ("POST /v2/rerank HTTP/1.1", ["127.0.0.1:1"], 403, "host_not_allowed"),
        ("POST /v2/rerank HTTP/1.1", ["127.1:{port}"], 403, "host_not_allowed"),
        ("POST /v2/rerank HTTP/1.1", ["2130706433:{port}"], 403, "host_not_allowed"),
        ("POST /v2/rerank HTTP/1.1", ["[::ffff:127.0.0.1]:{port}"], 403, "host_not_allowed"),
        ("POST https://evil-{mark}.example/v2/rerank HTTP/1.1", ["127.0.0.1:{port}"], 403, "host_not_allowed"),
        ("POST https://evil-{mark}.example/v2/rerank HTTP/1.1", ["evil-{mark}.example"], 403, "host_not_allowed"),
        ("POST /v2/rerank HTTP/1.1", [], 400, "host_invalid"),
        ("POST /v2/rerank HTTP/1.1", ["127.0.0.1:{port}", "evil-{mark}.example"], 400, "host_invalid"),
    ],
    ids=["foreign", "foreign-port", "other-connection", "other-port", "short-ip", "decimal-ip", "mapped-ipv6",
         "absolute-form", "absolute-form-and-host", "no-host", "two-hosts"],
)
def test_a_host_or_authority_other_than_the_tunnel_is_refused_and_recorded_as_the_tunnel(
    hostile: Hostile, token: str, line: str, hosts: list[str], status: int, code: str
) -> None:
    mark, opened = len(hostile.upstream.received), hostile.upstream.connections
    fill = {"mark": secrets.token_hex(4), "port": hostile.upstream.port}
    request = _head(line.format(**fill), [h.format(**fill) for h in hosts], {"Authorization": "Bearer x"})
    assert _send(hostile, token, request)[:2] == (status, code)
    _nothing_went_upstream(hostile, mark, opened)


def test_the_record_names_the_tunnels_host_not_the_clients(hostile: Hostile, token: str) -> None:
    evil = f"evil-{secrets.token_hex(4)}.example"
    request = _head(f"POST https://{evil}/v2/rerank HTTP/1.1", [evil], {"Authorization": "Bearer x"})
    status, code, peer = _send(hostile, token, request)
    assert (status, code) == (403, "host_not_allowed")
    record = _record_of(hostile, peer)
    assert (record["host"], record["error"], record["path"]) == ("127.0.0.1", "host_not_allowed", "/v2/rerank")
    assert evil.encode() not in raw_record_bytes(hostile.moto, hostile.stack.bucket, hostile.gateway_id, hostile.spool)


@pytest.mark.parametrize(
    "line", ["POST /v2/rerank HTTP/1.1", "POST https://127.0.0.1:{port}/v2/rerank HTTP/1.1"], ids=["origin", "absolute"]
)
def test_a_request_naming_its_tunnel_goes_through(hostile: Hostile, token: str, line: str) -> None:
    mark, port = len(hostile.upstream.received), hostile.upstream.port
    request = _head(line.format(port=port), [f"127.0.0.1:{port}"], {"Authorization": "Bearer x"})
    assert _send(hostile, token, request)[0] == 200
    [seen] = list(hostile.upstream.received)[mark:]
    assert (seen.method, seen.path, seen.headers["host"]) == ("POST", "/v2/rerank", f"127.0.0.1:{port}")


# -- checked and right: path tricks, other connections' hosts, IP forms ----------------------------


@pytest.mark.parametrize(
    "path",
    ["/v2/rerank/../chat", "/v2/chat/../rerank", "/v2/%2e%2e/v2/chat", "/v2/rerank%2F..%2Fchat", "//v2/rerank",
     "/v2/rerank;x", "/v2/rerank#x", "/v2/rerank%00", "/V2/RERANK", "/v2/./rerank"],
)
def test_path_tricks_on_a_rerank_connection_are_refused(hostile: Hostile, token: str, path: str) -> None:
    mark, opened = len(hostile.upstream.received), hostile.upstream.connections
    port = hostile.upstream.port
    request = _head(f"POST {path} HTTP/1.1", [f"127.0.0.1:{port}"], {"Authorization": "Bearer x"})
    assert _send(hostile, token, request)[:2] == (403, "operation_not_allowed")
    _nothing_went_upstream(hostile, mark, opened)


@pytest.mark.parametrize(
    ("collection", "code"),
    [
        ("candidates/../secrets", "operation_not_allowed"),
        ("%2e%2e", "collection_not_allowed"),
        ("..", "collection_not_allowed"),
        ("candidates%2F..%2Fsecrets", "collection_not_allowed"),
        ("candidates;x", "collection_not_allowed"),
        ("candidates%00", "collection_not_allowed"),
        ("Candidates", "collection_not_allowed"),
    ],
)
def test_path_tricks_on_a_store_collection_are_refused(
    hostile: Hostile, mint: Callable[..., dict[str, Any]], collection: str, code: str
) -> None:
    reader = mint("store-test", sub=READER_SUB)["token"]
    mark, opened = len(hostile.upstream.received), hostile.upstream.connections
    request = _head(f"POST /api/v1/collections/{collection}/get HTTP/1.1", [f"localhost:{hostile.upstream.port}"],
                    body=json.dumps({"ids": ["k1"]}))
    assert _send(hostile, reader, request, host="localhost")[:2] == (403, code)
    _nothing_went_upstream(hostile, mark, opened)


def test_a_tunnel_to_another_connections_host_is_the_wrong_connection(hostile: Hostile, token: str) -> None:
    mark, opened = len(hostile.upstream.received), hostile.upstream.connections
    request = _head("POST /v2/rerank HTTP/1.1", [f"localhost:{hostile.upstream.port}"], {"Authorization": "Bearer x"})
    assert _send(hostile, token, request, host="localhost")[:2] == (403, "wrong_connection")
    _nothing_went_upstream(hostile, mark, opened)


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f000001", "0177.0.0.1", "[::ffff:127.0.0.1]", "[::1]"])
def test_a_tunnel_to_another_form_of_the_upstreams_ip_is_refused(hostile: Hostile, token: str, host: str) -> None:
    opened = hostile.upstream.connections
    sock, head = connect(hostile, token, f"{host}:{hostile.upstream.port}")
    with sock:
        status, code = status_and_code(head + answer_of(sock, timeout=2.0))
    assert (status, code) == (403, "host_not_allowed")
    assert hostile.upstream.connections == opened


def test_without_a_token_these_are_refused_too(hostile: Hostile) -> None:
    """No token and a foreign Host: refused before the token is even looked for, nothing upstream."""
    mark, opened = len(hostile.upstream.received), hostile.upstream.connections
    with client(hostile.gateway, hostile.bundle, None) as c:
        resp = c.post(f"{hostile.upstream.url}/v2/rerank", content=_BODY, headers={"Host": "evil.example"})
    assert (resp.status_code, resp.json()["code"]) == (403, "host_not_allowed")
    _nothing_went_upstream(hostile, mark, opened)
