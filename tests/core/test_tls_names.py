"""jitgate.tls_names: the upstream server name comes from the policy; a client's name must match its tunnel."""

from __future__ import annotations

import pytest

from jitgate.policy import parse_policy
from jitgate.tls_names import misdirected, upstream_server_name

POLICY = parse_policy("""
version: 1
issuers: [{issuer: https://oidc.test, audience: jitgate}]
connections:
  cohere:
    dialect: cohere
    upstream: https://Api.Cohere.com
    hosts: [api.cohere.ai]
    credential: {secret_id: jitgate/cohere}
  local:
    dialect: tei
    upstream: https://127.0.0.1:8443/rerank
    credential: {secret_id: jitgate/tei}
  v6:
    dialect: tei
    upstream: https://[::1]:9443
    credential: {secret_id: jitgate/v6}
  plain:
    dialect: chroma
    upstream: http://store.internal:8000
    credential: {secret_id: jitgate/store, header: X-Chroma-Token, format: "{secret}"}
""")


@pytest.mark.parametrize(
    ("host", "port", "name"),
    [
        ("api.cohere.com", 443, "api.cohere.com"),
        ("API.COHERE.COM.", 443, "api.cohere.com"),
        ("127.0.0.1", 8443, "127.0.0.1"),  # an IP upstream: mitmproxy then verifies the IP and sends no SNI
        ("::1", 9443, "::1"),
        ("store.internal", 8000, "store.internal"),
        ("api.cohere.com", 8443, None),  # the right host on another port is no upstream
        ("api.cohere.ai", 443, None),  # a public name of the connection is never connected to
        ("127.0.0.1", 443, None),
        ("evil.example", 443, None),
    ],
)
def test_upstream_server_name(host: str, port: int, name: str | None) -> None:
    assert upstream_server_name(POLICY, host, port) == name


@pytest.mark.parametrize(
    ("client", "tunnel", "refused"),
    [
        ("api.cohere.com", "api.cohere.com", False),
        ("API.Cohere.com.", "api.cohere.com", False),
        (None, "127.0.0.1", False),  # clients send no SNI for an IP
        ("", "127.0.0.1", False),
        ("api.cohere.com", None, False),  # no tunnel: a plain-HTTP proxy request (the name was the proxy's)
        ("localhost", "127.0.0.1", True),
        ("evil.example", "api.cohere.com", True),
        ("api.cohere.com.evil.example", "api.cohere.com", True),
        ("api.cohere.ai", "api.cohere.com", True),
    ],
)
def test_misdirected(client: str | None, tunnel: str | None, refused: bool) -> None:
    assert misdirected(client, tunnel) is refused
