"""upstream_sni: the upstream TLS name is the policy's upstream host, never the client's ClientHello name.
The real gateway runs are tests/hostile/test_tls_names.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from mitmproxy import connection, http
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from mitmproxy.test import taddons, tflow

from addon import meta
from addon.failsafe import fail_closed
from addon.upstream_sni import NOT_AN_UPSTREAM, UpstreamSni

POLICY = """
version: 1
issuers: [{issuer: https://oidc.test, audience: jitgate}]
connections:
  rerank: {dialect: cohere, upstream: "https://api.cohere.test", hosts: [api.cohere.com], credential: {secret_id: r}}
"""


@pytest.fixture
def addon(tmp_path: Path) -> UpstreamSni:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    sni = UpstreamSni()
    with taddons.context(sni) as tctx:
        tctx.configure(sni, jitgate_policy=str(path), jitgate_table="t")
    return sni


def _connect(
    addon: UpstreamSni, address: tuple[str, int], *, server_sni: str | None, client_sni: str | None
) -> connection.Server:
    client = connection.Client(peername=("127.0.0.1", 50000), sockname=("127.0.0.1", 8080))
    client.sni = client_sni
    server = connection.Server(address=address)
    server.sni = server_sni  # what mitmproxy's HTTP layer copied from the client
    addon.server_connect(ServerConnectionHookData(server=server, client=client))
    return server


def _flow(client_sni: str | None, tunnel: tuple[str, int] | None) -> http.HTTPFlow:
    f = tflow.tflow()
    f.client_conn.sni = client_sni
    f.server_conn.address = tunnel
    return f


@pytest.mark.parametrize("client_sni", ["evil.example", "API.COHERE.TEST", None])
def test_the_upstream_name_overwrites_what_mitmproxy_took_from_the_client(
    addon: UpstreamSni, client_sni: str | None
) -> None:
    server = _connect(addon, ("api.cohere.test", 443), server_sni=client_sni, client_sni=client_sni)
    assert server.sni == "api.cohere.test" and server.error is None


@pytest.mark.parametrize("address", [("evil.example", 443), ("api.cohere.com", 443), ("api.cohere.test", 8443)])
def test_an_address_that_is_no_upstream_is_not_connected_to(addon: UpstreamSni, address: tuple[str, int]) -> None:
    server = _connect(addon, address, server_sni="evil.example", client_sni="evil.example")
    assert server.error == NOT_AN_UPSTREAM


def test_no_policy_yet_connects_nowhere() -> None:
    server = _connect(UpstreamSni(), ("api.cohere.test", 443), server_sni=None, client_sni=None)
    assert server.error == NOT_AN_UPSTREAM


def test_a_failure_deciding_the_name_connects_nowhere(addon: UpstreamSni, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> str:
        raise RuntimeError("boom")

    monkeypatch.setattr("addon.upstream_sni.upstream_server_name", broken)
    server = _connect(addon, ("api.cohere.test", 443), server_sni="evil.example", client_sni="evil.example")
    assert server.error == NOT_AN_UPSTREAM


@pytest.mark.parametrize(
    ("client_sni", "tunnel", "refused"),
    [
        ("evil.example", ("api.cohere.test", 443), True),
        ("localhost", ("127.0.0.1", 443), True),
        ("Api.Cohere.Test.", ("api.cohere.test", 443), False),
        (None, ("127.0.0.1", 443), False),
        ("gateway.internal", None, False),  # TLS to the proxy itself, plain-HTTP request: no tunnel
    ],
)
def test_a_client_name_other_than_the_tunnel_is_refused_421(
    addon: UpstreamSni, client_sni: str | None, tunnel: tuple[str, int] | None, refused: bool
) -> None:
    f = _flow(client_sni, tunnel)
    with taddons.context(addon):
        fail_closed(addon).requestheaders(f)
    if refused:
        assert f.response is not None and f.response.status_code == 421
        assert f.response.json()["code"] == "misdirected_request" and meta.refused(f)
    else:
        assert f.response is None and not meta.refused(f)


def test_a_refused_flow_is_left_alone(addon: UpstreamSni) -> None:
    f = _flow("evil.example", ("api.cohere.test", 443))
    meta.state_of(f).error = "token_required"
    addon.requestheaders(f)
    assert f.response is None
