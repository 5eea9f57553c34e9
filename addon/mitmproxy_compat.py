"""Every reach into mitmproxy's internals, in one place, each checked at start against the release it
was written for.

The gateway needs four things mitmproxy offers no API for:

- **error answers** (needed): mitmproxy builds its own 400/413/502 answers in its HTTP/1 server
  layer with no hook; `_http1.make_error_response` is replaced so they go out as jitgate's JSON
  (addon/error_answers.py), never an HTML page naming internal hosts; over HTTP/2 (client side)
  `Http2Server._handle_event` writes its own HTML error answer inline, so a handler goes in front
  of it that answers those errors (and only those) as the same JSON (`h2_server_handle_event`);
- **raw relay replacement** (needed): at `next_layer` a raw TCP/UDP relay mitmproxy picked is
  replaced in the layer stack by the HTTP layer (`http_instead_of_raw`), so every byte meets the
  chain (addon/http_only.py);
- **closing an upstream** (needed): `close_upstream` closes a flow's server connection through
  the proxyserver's connection handler, for the upstream timeout and for a cut stream;
- **hook dispatch** (speed only): addon/hook_dispatch.py replaces `AddonManager.trigger_event`.

`install()` compares each reach's mitmproxy code with SHA-256 digests of the sources as in
mitmproxy 12.2.3 (pyproject.toml allows `>=12.2.3,<12.3`, constraints.txt pins 12.2.3). A needed
reach that differs stops the start (`IncompatibleMitmproxy`: mitmdump logs it and exits, as for any
error during start-up); a speed-only one falls back to mitmproxy's own code with a warning.
tests/addon/test_mitmproxy_compat.py changes each reach and checks the outcome, also against a
real mitmdump.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mitmproxy import ctx, http, version
from mitmproxy.addons import proxyserver
from mitmproxy.proxy import context, layer, layers, mode_specs, server
from mitmproxy.proxy.commands import SendData
from mitmproxy.proxy.events import Event
from mitmproxy.proxy.layer import CommandGenerator
from mitmproxy.proxy.layers.http import HTTPMode, _http1, _http2
from mitmproxy.proxy.layers.http._events import ResponseProtocolError

from addon import error_answers, hook_dispatch

WRITTEN_FOR = "12.2.3"

# mitmproxy's own functions, taken before anything here replaces them.
_STOCK_MAKE_ERROR_RESPONSE: Callable[..., bytes] = _http1.make_error_response
_STOCK_H2_SERVER_HANDLE_EVENT: Callable[..., CommandGenerator[None]] = _http2.Http2Server._handle_event


class IncompatibleMitmproxy(RuntimeError):
    """A reach the gateway needs for security is not what this mitmproxy offers: it does not start."""


def _digest(obj: Any) -> str:
    try:
        return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()
    except (OSError, TypeError):
        return ""


@dataclass(frozen=True)
class Reach:
    """One use of mitmproxy internals: the sources it relies on and whether the gateway needs it."""

    name: str
    needed: bool  # True: not safe without it, the gateway does not start; False: speed, fall back
    sources: Callable[[], dict[str, Any]]  # name -> the mitmproxy object it relies on, as installed
    digests: dict[str, str]  # name -> SHA-256 of that object's source in mitmproxy 12.2.3

    def changed(self) -> list[str]:
        """The names whose source differs from the one this reach was written against."""
        found = self.sources()
        return sorted(name for name, digest in self.digests.items() if _digest(found.get(name)) != digest)


def _layer_sources() -> dict[str, Any]:
    return {"layer.NextLayer": layer.NextLayer, "context.Context": context.Context}


def _upstream_sources() -> dict[str, Any]:
    return {
        "Proxyserver.__init__": proxyserver.Proxyserver.__init__,  # `connections`, by client id
        "ConnectionHandler.__init__": server.ConnectionHandler.__init__,  # `transports`
        "ConnectionHandler.handle_connection": server.ConnectionHandler.handle_connection,  # EOF -> closed
        "ConnectionHandler.close_connection": server.ConnectionHandler.close_connection,
        "ConnectionIO": server.ConnectionIO,
    }


def _http1_calls_make_error_response() -> bool:
    try:
        return inspect.getsource(_http1).count("make_error_response(") >= 2
    except (OSError, TypeError):
        return False


ERROR_ANSWERS = Reach(
    "error answers (_http1.make_error_response)",
    True,
    lambda: {"_http1.make_error_response": _STOCK_MAKE_ERROR_RESPONSE},
    {"_http1.make_error_response": "03ce75ab62e8e78ba1bc19e735d55a520bf878929c32866868dd234996b4b281"},
)
H2_ERROR_ANSWERS = Reach(
    "HTTP/2 error answers (Http2Server._handle_event)",
    True,
    lambda: {
        "Http2Server._handle_event": _STOCK_H2_SERVER_HANDLE_EVENT,
        "Http2Connection._handle_event": _http2.Http2Connection._handle_event,  # writes the HTML page
    },
    {
        "Http2Server._handle_event": "7282fa18e70a3eaac6f66a4b06dccafa34576a5bfe79feae6b2b212b42165b3c",
        "Http2Connection._handle_event": "a7f4a7a71d31074b8c8d0106114bdf8ba9a5b787b8a28ecb4ea583b6345dcc2b",
    },
)
RAW_RELAY = Reach(
    "raw relay replacement (NextLayer, Context.layers)",
    True,
    _layer_sources,
    {
        "layer.NextLayer": "3cbcbafad282cba324db738bc8cbcaa12100b56cfbc4cee89634a636cbbfae5a",
        "context.Context": "dd52bbec90eacaced025ea2602b09d2accf0568280eab8374745a4bb27c6fc91",
    },
)
UPSTREAM_CLOSE = Reach(
    "closing an upstream (ConnectionHandler.transports)",
    True,
    _upstream_sources,
    {
        "Proxyserver.__init__": "618fcf430ee48e8334b1a20112af1fdf87142f5518b0df72fa2c21ca2c2d0567",
        "ConnectionHandler.__init__": "ffb8e6c9e6c6d0207ce1b32773e84eef70922ac7c33d311c07092862e05162d4",
        "ConnectionHandler.handle_connection": "95c3f93e9824e527cd3c1af9656c0e04690562abcd23f0b029d547257fb53f94",
        "ConnectionHandler.close_connection": "c0d10cc05dd65b80025d49f02f3ad4315fbd3ed8b82778eba7c55e29155f8cb6",
        "ConnectionIO": "f498a46ab1b0f40f9c407fb642145167522cfbfa424d09ce4c91c1ce2a89106f",
    },
)
HOOK_DISPATCH = Reach(
    "hook dispatch (AddonManager.trigger_event)",
    False,
    lambda: dict(hook_dispatch.STOCK),  # hook_dispatch.install() checks these itself and warns
    hook_dispatch.STOCK_SOURCES,
)
REACHES = (ERROR_ANSWERS, H2_ERROR_ANSWERS, RAW_RELAY, UPSTREAM_CLOSE, HOOK_DISPATCH)


def install() -> None:
    """Check every reach and put the patches in place; raise `IncompatibleMitmproxy` (and change
    nothing) when a needed one differs, fall back with a warning when a speed-only one does."""
    broken = [f"{r.name}: {', '.join(r.changed())}" for r in REACHES if r.needed and r.changed()]
    if not _http1_calls_make_error_response():
        broken.append(f"{ERROR_ANSWERS.name}: _http1 no longer calls it by its module name")
    if broken:
        raise IncompatibleMitmproxy(
            f"jitgate was written against mitmproxy {WRITTEN_FOR}; this mitmproxy differs where the gateway "
            f"needs it, so it does not start: {'; '.join(broken)}"
        )
    _http1.make_error_response = error_answers.json_error_response
    _http2.Http2Server._handle_event = h2_server_handle_event  # type: ignore[method-assign]
    hook_dispatch.install()  # speed only: keeps mitmproxy's own dispatch, with a warning, where it differs


def uninstall() -> None:
    """mitmproxy's own code back (tests)."""
    _http1.make_error_response = _STOCK_MAKE_ERROR_RESPONSE
    _http2.Http2Server._handle_event = _STOCK_H2_SERVER_HANDLE_EVENT  # type: ignore[method-assign]
    hook_dispatch.uninstall()


# -- HTTP/2 error answers -----------------------------------------------------------------------


def h2_server_handle_event(self: _http2.Http2Server, event: Event) -> CommandGenerator[None]:
    """`Http2Server._handle_event`, except that an error mitmproxy would answer with its HTML page
    (the same conditions as its own code: a response error on a stream still open for the client,
    no headers sent yet, a status for the error) is answered with jitgate's JSON."""
    if isinstance(event, ResponseProtocolError) and not self.is_closed(event.stream_id):
        stream = self.h2_conn.streams[event.stream_id]
        status = event.code.http_status_code()
        if self.is_open_for_us(event.stream_id) and not stream.state_machine.headers_sent and status is not None:
            status, body = error_answers.json_error_body(status)
            self.h2_conn.send_headers(
                event.stream_id,
                [
                    (b":status", b"%d" % status),
                    (b"server", version.MITMPROXY.encode()),
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(body)),
                ],
            )
            self.h2_conn.send_data(event.stream_id, body, end_stream=True)
            data = self.h2_conn.data_to_send()
            if data:
                yield SendData(self.conn, data)
            return
    yield from _STOCK_H2_SERVER_HANDLE_EVENT(self, event)


# -- raw relay replacement ----------------------------------------------------------------------

_RAW = (layers.TCPLayer, layers.UDPLayer, layers.RawQuicLayer, layers.DNSLayer)


def _allowed_raw(candidate: layer.Layer) -> bool:
    """DNS in local capture mode: the captured job resolves the names it then connects to."""
    return isinstance(candidate, layers.DNSLayer) and isinstance(
        candidate.context.client.proxy_mode, mode_specs.LocalMode
    )


def http_instead_of_raw(top: layer.Layer | None) -> layer.Layer | None:
    """`top` (a layer and the child layers already stacked under it) with its first raw relay
    replaced by the HTTP layer; None when it holds none."""
    parent: Any = None
    current: Any = top
    while isinstance(current, layer.Layer):
        if isinstance(current, _RAW) and not _allowed_raw(current):
            # A layer adds itself to its context's stack when made: take the raw one out first, so
            # the stack the layers below look at stays what it is.
            if current in current.context.layers:
                current.context.layers.remove(current)
            replacement = layers.HttpLayer(current.context, HTTPMode.transparent)
            if parent is None:
                return replacement
            parent.child_layer = replacement
            return top
        parent, current = current, getattr(current, "child_layer", None)
    return None


def http_layer(nextlayer: layer.NextLayer) -> layer.Layer:
    """A fresh HTTP layer for `nextlayer`'s context (when its stack could not be read)."""
    return layers.HttpLayer(nextlayer.context, HTTPMode.transparent)


# -- closing an upstream ------------------------------------------------------------------------


def _handler(flow: http.HTTPFlow) -> Any:
    """The proxyserver's connection handler of `flow`'s client connection (None: none)."""
    server_addon = ctx.master.addons.get("proxyserver")  # type: ignore[no-untyped-call]
    if not isinstance(server_addon, proxyserver.Proxyserver):
        return None
    connections = getattr(server_addon, "connections", None)
    if not isinstance(connections, dict):
        return None
    return connections.get(flow.client_conn.id)


def close_upstream(flow: http.HTTPFlow) -> bool:
    """Close `flow`'s server connection (also one still connecting); False when there is none to close.

    Closing the writer ends the socket (the upstream sees it at once) and the handler's read loop
    then sees end of file, exactly as if the upstream had hung up: the HTTP layer reports it to the
    flow (`error` hook, then a 502 to the client) and closes the connection itself. Cancelling the
    read task instead (the handler's own `close_connection`) is not safe from here: a task
    cancelled while it waits for the handler's event lock ends without closing its socket. Only a
    connection still connecting (no writer yet) is closed by cancelling, which mitmproxy handles as
    a failed connect.
    """
    handler = _handler(flow)
    if handler is None:
        return False
    conn = flow.server_conn
    io = handler.transports.get(conn)
    if io is None:
        return False
    if io.writer is None:
        handler.close_connection(conn)  # still connecting: the connect is cancelled
    else:
        io.writer.close()
    return True


async def stop_listening() -> None:
    """Close the proxy's listening sockets; connections already open go on (a graceful stop).

    Through the proxyserver addon's `servers.update` (no private name: no digest to check), with
    no mode left: each server closes its sockets, and asyncio leaves accepted connections open.
    """
    ps: Any = ctx.master.addons.get("proxyserver")  # type: ignore[no-untyped-call]
    if ps is not None:
        await ps.servers.update([])
