"""The local adapter: HTTP requests become API Gateway HTTP API v2 events."""

from __future__ import annotations

import base64

import httpx
import pytest

from broker.local import serve, to_event
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import CI_CLAIMS
from tests.broker.conftest import NOW


def _event(**kw: object) -> dict[str, object]:
    args: dict[str, object] = {
        "method": "POST",
        "target": "/v1/tokens",
        "headers": [("Host", "127.0.0.1:8000"), ("Content-Type", "application/json")],
        "body": b'{"connection": "c"}',
        "source_ip": "127.0.0.1",
        "host": "127.0.0.1:8000",
    }
    args.update(kw)
    return to_event(**args)  # type: ignore[arg-type]


def test_shape_is_payload_v2() -> None:
    ev = _event()
    assert ev["version"] == "2.0" and ev["rawPath"] == "/v1/tokens" and ev["isBase64Encoded"] is False
    ctx = ev["requestContext"]
    assert isinstance(ctx, dict) and ctx["http"]["method"] == "POST" and ctx["http"]["sourceIp"] == "127.0.0.1"
    assert ev["body"] == '{"connection": "c"}'


@pytest.mark.parametrize(
    ("target", "raw", "params"),
    [("/x?a=1&b=2", "a=1&b=2", {"a": "1", "b": "2"}), ("/x?a=1&a=2", "a=1&a=2", {"a": "1,2"}), ("/x", "", None)],
)
def test_query_strings(target: str, raw: str, params: dict[str, str] | None) -> None:
    ev = _event(method="GET", target=target, body=b"")
    assert ev["rawPath"] == "/x" and ev["rawQueryString"] == raw
    assert ev.get("queryStringParameters") == params
    assert ev["body"] is None


def test_headers_are_lowercased_joined_and_cookies_split() -> None:
    ev = _event(headers=[("X-A", "1"), ("x-a", "2"), ("Cookie", "s=1; t=2"), ("Authorization", "Bearer t")])
    assert ev["headers"] == {"x-a": "1,2", "authorization": "Bearer t"}
    assert ev["cookies"] == ["s=1", "t=2"]


def test_binary_body_is_base64() -> None:
    ev = _event(body=b"\xff\xfe")
    assert ev["isBase64Encoded"] is True and base64.b64decode(str(ev["body"])) == b"\xff\xfe"


def test_serve_answers_real_http_with_the_handler(svc: object, issuer: OidcIssuer) -> None:
    """`serve()` in a thread: real HTTP in, the same handler (mock_aws via the `svc` fixture)."""
    server, base_url = serve()
    try:
        jwks = httpx.get(f"{base_url}/.well-known/jwks.json", timeout=10)
        assert jwks.status_code == 200 and len(jwks.json()["keys"]) == 2
        assert jwks.headers["content-type"] == "application/json"
        oidc = issuer.mint("repo:acme/search-ranker:ref:refs/heads/main", CI_CLAIMS, now=NOW)
        minted = httpx.post(f"{base_url}/v1/tokens", json={"connection": "jina-test"},
                            headers={"Authorization": f"Bearer {oidc}"}, timeout=10)
        assert minted.status_code == 201, minted.text
        missing = httpx.get(f"{base_url}/nowhere", timeout=10)
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    finally:
        server.shutdown()
        server.server_close()


def test_serve_refuses_bad_lengths_and_survives_a_failing_handler(
    svc: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    import broker.app

    server, base_url = serve()
    try:
        host, port = server.server_address[:2]
        with socket.create_connection((str(host), port), timeout=5) as raw:
            raw.sendall(b"POST /v1/tokens HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n")
            assert raw.recv(4096).startswith(b"HTTP/1.1 413")

        def boom(event: object, context: object) -> object:
            raise RuntimeError("handler crashed")

        monkeypatch.setattr(broker.app, "handler", boom)
        server.shutdown()
        server.server_close()
        server, base_url = serve()
        failed = httpx.get(f"{base_url}/.well-known/jwks.json", timeout=5)
        assert (failed.status_code, failed.json()["code"]) == (502, "internal_error")
        assert "crashed" not in failed.text
    finally:
        server.shutdown()
        server.server_close()
