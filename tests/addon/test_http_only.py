"""http_only: mitmproxy's raw relays and protocol switches are off, and what would still pick one
is parsed as HTTP instead. The real gateway runs are tests/hostile/test_protocols.py."""

from __future__ import annotations

import json
import secrets

import pytest
from mitmproxy import connection, exceptions, http, options
from mitmproxy.proxy import context, layer, layers, mode_specs, tunnel
from mitmproxy.proxy.layers import modes
from mitmproxy.proxy.layers.http import HTTPMode
from mitmproxy.test import taddons, tflow

from addon import meta
from addon.http_only import EXEMPTING, HttpOnly
from addon.mitmproxy_compat import http_instead_of_raw


def _context(mode: str = "regular", transport: str = "tcp") -> context.Context:
    client = connection.Client(
        peername=("127.0.0.1", 50000),
        sockname=("127.0.0.1", 8080),
        transport_protocol=transport,  # type: ignore[arg-type]
        proxy_mode=mode_specs.ProxyMode.parse(mode),
    )
    return context.Context(client, options.Options())


def _request_flow() -> http.HTTPFlow:
    """A request as mitmproxy hands it on inside a tunnel: its Host names the target."""
    flow = tflow.tflow()
    flow.request.host_header = f"{flow.request.host}:{flow.request.port}"
    return flow


def test_raw_relays_and_websockets_are_switched_off() -> None:
    addon = HttpOnly()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, rawtcp=True, websocket=True)
        assert (tctx.options.rawtcp, tctx.options.websocket) == (False, False)


@pytest.mark.parametrize("name", EXEMPTING)
def test_an_option_that_exempts_traffic_stops_the_start(name: str) -> None:
    addon = HttpOnly()
    with taddons.context(addon) as tctx:
        if name not in tctx.options:  # an option of mitmproxy's proxyserver addon, not loaded here
            tctx.options.add_option(name, str | None, None, "")  # type: ignore[arg-type]
        with pytest.raises(exceptions.OptionsError, match=f"{name} lets traffic past"):
            tctx.configure(addon, **{name: "1k" if name == "stream_large_bodies" else [".*"]})


@pytest.mark.parametrize("upgrade", ["websocket", "WebSocket", "tcp", "h2c, websocket"])
def test_a_request_to_switch_protocols_is_refused(upgrade: str) -> None:
    addon = HttpOnly()
    flow = _request_flow()
    flow.request.headers["Connection"] = "Upgrade"
    flow.request.headers["Upgrade"] = upgrade
    with taddons.context(addon):
        addon.request(flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert json.loads(flow.response.content or b"")["code"] == "upgrade_not_allowed"
    assert flow.metadata[meta.ERROR] == "upgrade_not_allowed"


def test_an_ordinary_request_and_a_refused_one_are_left_alone() -> None:
    addon = HttpOnly()
    plain = _request_flow()
    refused = _request_flow()
    refused.request.headers["Upgrade"] = "websocket"
    refused.metadata[meta.ERROR] = "token_required"
    with taddons.context(addon):
        addon.request(plain)
        addon.request(refused)
    assert plain.response is None and meta.ERROR not in plain.metadata
    assert refused.response is None and refused.metadata[meta.ERROR] == "token_required"


@pytest.mark.parametrize(("status", "killed"), [(101, True), (200, False), (400, False)])
def test_an_unasked_switch_of_protocols_kills_the_flow(status: int, killed: bool) -> None:
    addon = HttpOnly()
    flow = tflow.tflow(resp=True)
    assert flow.response is not None
    flow.response.status_code = status
    with taddons.context(addon):
        addon.responseheaders(flow)
    assert (flow.error is not None) is killed


def _stack(*kinds: type[layer.Layer], ctx: context.Context | None = None) -> layer.Layer:
    """Layers stacked top to bottom as mitmproxy's next_layer builds them, inside a proxy mode layer."""
    ctx = ctx or _context()
    modes.HttpProxy(ctx)  # what a tunnel's layers sit on (TLS layers look at the layer below them)
    stack = tunnel.LayerStack()
    for kind in kinds:
        stack /= kind(ctx, HTTPMode.transparent) if kind is layers.HttpLayer else kind(ctx)  # type: ignore[call-arg]
    return stack[0]


@pytest.mark.parametrize(
    "kinds",
    [
        (layers.TCPLayer,),
        (layers.UDPLayer,),
        (layers.DNSLayer,),
        (layers.ClientTLSLayer, layers.TCPLayer),
        (layers.ServerTLSLayer, layers.ClientTLSLayer, layers.TCPLayer),
    ],
    ids=["tcp", "udp", "dns", "tls-tcp", "server-tls-client-tls-tcp"],
)
def test_a_raw_relay_anywhere_in_the_stack_becomes_http(kinds: tuple[type[layer.Layer], ...]) -> None:
    top = _stack(*kinds)
    ctx = top.context
    out = http_instead_of_raw(top)
    assert out is not None
    # The context's own stack says the same: the raw layer is gone, the HTTP layer in its place.
    assert not any(isinstance(x, layers.TCPLayer | layers.UDPLayer | layers.DNSLayer) for x in ctx.layers)
    assert isinstance(ctx.layers[-1], layers.HttpLayer)
    chain = []
    current: object = out
    while isinstance(current, layer.Layer):
        chain.append(current)
        current = getattr(current, "child_layer", None)
    assert not any(isinstance(x, layers.TCPLayer | layers.UDPLayer | layers.DNSLayer) for x in chain)
    assert isinstance(chain[-1], layers.HttpLayer) and chain[-1].mode is HTTPMode.transparent
    assert [type(x) for x in chain[:-1]] == list(kinds[:-1])  # the TLS layers above it stay


@pytest.mark.parametrize(
    "kinds",
    [(layers.HttpLayer,), (layers.ServerTLSLayer, layers.ClientTLSLayer), (layers.ClientTLSLayer, layers.HttpLayer)],
    ids=["http", "tls-next", "tls-http"],
)
def test_http_and_tls_stacks_are_kept(kinds: tuple[type[layer.Layer], ...]) -> None:
    assert http_instead_of_raw(_stack(*kinds)) is None


def test_dns_stays_in_local_capture_mode_only() -> None:
    assert http_instead_of_raw(_stack(layers.DNSLayer, ctx=_context("local", "udp"))) is None
    assert http_instead_of_raw(_stack(layers.DNSLayer, ctx=_context("regular"))) is not None


def test_the_next_layer_hook_replaces_what_mitmproxy_chose() -> None:
    addon = HttpOnly()
    ctx = _context()
    nextlayer = layer.NextLayer(ctx)
    nextlayer.layer = layers.TCPLayer(ctx)
    with taddons.context(addon):
        addon.next_layer(nextlayer)
    assert isinstance(nextlayer.layer, layers.HttpLayer)
    nextlayer.layer = kept = layers.HttpLayer(ctx, HTTPMode.regular)
    with taddons.context(addon):
        addon.next_layer(nextlayer)
    assert nextlayer.layer is kept


def test_a_request_with_trailers_is_refused() -> None:
    addon = HttpOnly()
    flow = _request_flow()
    fake_key = "AKIA" + "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))
    flow.request.trailers = http.Headers(x_exfil=fake_key)
    with taddons.context(addon):
        addon.request(flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert json.loads(flow.response.content or b"")["code"] == "trailers_not_allowed"
    assert fake_key.encode() not in (flow.response.content or b"")


def test_the_trailers_of_an_answer_are_dropped() -> None:
    addon = HttpOnly()
    flow = tflow.tflow(resp=True)
    assert flow.response is not None
    flow.response.trailers = http.Headers(x_note="leaks")
    plain = tflow.tflow(resp=True)
    with taddons.context(addon):
        addon.response(flow)
        addon.response(plain)
    assert flow.response.trailers is None
    assert plain.response is not None and plain.response.status_code == 200 and plain.response.trailers is None


def test_a_failing_check_fails_closed() -> None:
    """Whatever mitmproxy put there, a check that raises leaves the HTTP layer, never the raw relay."""

    class _Broken(layer.Layer):
        @property
        def child_layer(self) -> layer.Layer:
            raise RuntimeError("broken")

    addon = HttpOnly()
    ctx = _context()
    nextlayer = layer.NextLayer(ctx)
    nextlayer.layer = _Broken(ctx)
    with taddons.context(addon):
        addon.next_layer(nextlayer)
    assert isinstance(nextlayer.layer, layers.HttpLayer)


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"method": "post"}, 400, "method_not_allowed"),
        ({"method": "Post"}, 400, "method_not_allowed"),
        ({"headers": {"X-HTTP-Method-Override": "DELETE"}}, 403, "header_not_allowed"),
        ({"headers": {"X_Original_URL": "/v2/chat"}}, 403, "header_not_allowed"),
        ({"headers": {"X-Forwarded-Host": "store.internal"}}, 403, "header_not_allowed"),
        ({"host": None}, 400, "host_invalid"),
        ({"host": "evil.example"}, 403, "host_not_allowed"),
        ({"host": "address:23"}, 403, "host_not_allowed"),
        ({"authority": "evil.example"}, 403, "host_not_allowed"),  # absolute-form inside the tunnel
    ],
)
def test_a_request_asking_for_more_than_the_chain_checks_is_refused(
    change: dict[str, object], status: int, code: str
) -> None:
    addon = HttpOnly()
    flow = _request_flow()
    req = flow.request
    req.method = str(change.get("method", req.method))
    for name, value in dict(change.get("headers", {})).items():  # type: ignore[call-overload]
        req.headers[name] = value
    if "host" in change:
        req.host_header = change["host"]  # type: ignore[assignment]
    if "authority" in change:
        req.authority = str(change["authority"])
    with taddons.context(addon):
        addon.request(flow)
    assert flow.response is not None
    assert (flow.response.status_code, json.loads(flow.response.content or b"")["code"]) == (status, code)
    assert flow.metadata[meta.ERROR] == code
    # Whatever the client named, the record names the target (the tunnel's host).
    assert (req.pretty_host, req.host_header) == ("address", "address:22")


@pytest.mark.parametrize(
    ("version", "host"), [("HTTP/2.0", None), ("HTTP/1.1", "address:22")], ids=["h2-authority-only", "absolute-form"]
)
def test_a_request_naming_its_target_goes_on_in_origin_form(version: str, host: str | None) -> None:
    """HTTP/2 may name the target in `:authority` alone; an HTTP/1 absolute-form naming its tunnel
    goes on in origin-form, the path the scope checks."""
    addon = HttpOnly()
    flow = tflow.tflow()
    req = flow.request
    req.http_version, req.host_header, req.authority = version, host, "address:22"
    with taddons.context(addon):
        addon.request(flow)
    assert flow.response is None
    assert (req.authority if version.startswith("HTTP/1") else "", req.host, req.path) == ("", "address", "/path")
