"""http_only: the gateway forwards HTTP and nothing else, so every byte meets the chain.

mitmproxy relays what it does not take for HTTP byte for byte (a raw TCP layer), and after a
101 answer it turns the connection into a WebSocket or raw TCP relay. No jitgate hook runs on
either: no token check, no scope, no inspection, no record. Reproduced against a real gateway
before this addon: a client with no token opened a CONNECT tunnel to a connection's host, offered
no ALPN and wrote its request line in two pieces, the first without a newline. mitmproxy's guess
(`next_layer`: no newline yet, so "probably no HTTP") made the tunnel a raw relay, and the
upstream answered the request with 200. A leading CRLF, which many servers skip, did the same.

So, in the gateway:
- `rawtcp` and `websocket` are switched off, whatever the command line said.
- `ignore_hosts`, `allow_hosts`, `tcp_hosts`, `udp_hosts` and `stream_large_bodies` stop the
  start: the first four exempt traffic from interception, the last streams large bodies on
  before any hook has seen them.
- At `next_layer`, any raw relay mitmproxy still picks (TCP, UDP, QUIC; DNS outside local
  capture, where the captured job must resolve names) is replaced by the HTTP layer. That layer
  parses what comes and answers 400 to what is not HTTP.
- A request asking to switch protocols (an `Upgrade` header, once mitmproxy has dropped its own
  h2c upgrade) gets 403 `upgrade_not_allowed`. A 101 answer can then only come unasked: the flow
  is killed at its headers, so neither side is left with a relay.
- Trailer fields (HTTP/2) are scanned by nobody: a request carrying them gets 403
  `trailers_not_allowed`, and an answer's trailers are dropped before anything else sees the
  answer. Before, an AWS key in a request trailer met no check: mitmproxy sends HTTP/2 trailers on
  to an HTTP/2 upstream after the `request` hook, and to an HTTP/1 one it sent the request on and
  then failed on them.
- What a request asks for is what the chain checks (`jitgate.request_target`, issue 16 items 8 to
  10), checked here before any other hook: a method that is no exact upper-case token (`post`
  passed the scope as POST and reached the upstream as `post`) is 400 `method_not_allowed`; a
  method-override, URL-rewrite or forwarded-host header is 403 `header_not_allowed`; no Host (or
  two, or one that is no host[:port]) is 400 `host_invalid`; a Host or an absolute-form authority
  other than the request's target (the tunnel's host, inside a CONNECT tunnel) is 403
  `host_not_allowed`. Before, mitmproxy set the target from the tunnel and nothing compared the
  Host with it. A refused flow's Host is set to the target, so its record names the tunnel's host,
  not the client's. An absolute-form request naming its own tunnel goes on in origin-form.
"""

from __future__ import annotations

import logging

from mitmproxy import ctx, http
from mitmproxy.proxy import layer

from addon import meta, settings
from addon.mitmproxy_compat import http_instead_of_raw, http_layer
from addon.respond import refuse
from jitgate.errors import TrailersNotAllowed, UpgradeNotAllowed
from jitgate.request_target import authority, header_error, method_error, target_error

logger = logging.getLogger(__name__)

# mitmproxy options that would let traffic past the chain uninspected.
SWITCHED_OFF = ("rawtcp", "websocket")
EXEMPTING = ("ignore_hosts", "allow_hosts", "tcp_hosts", "udp_hosts", "stream_large_bodies")
class HttpOnly:
    def configure(self, updated: set[str]) -> None:
        opts = ctx.options
        for name in EXEMPTING:
            if name in updated and name in opts and getattr(opts, name):
                raise settings.options_error(
                    f"{name} lets traffic past the jitgate chain (uninspected, unrecorded); leave it unset"
                )
        on = [name for name in SWITCHED_OFF if name in updated and name in opts and getattr(opts, name)]
        if on:
            ctx.options.update(**dict.fromkeys(on, False))  # type: ignore[no-untyped-call]
            logger.info("jitgate: %s off: the gateway forwards inspected HTTP only", ", ".join(on))

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        # mitmproxy's own next_layer addon has decided by now (it runs before scripts). This hook is
        # no flow hook (failsafe.py does not guard it), so a failure here fails closed by itself.
        try:
            replaced = http_instead_of_raw(nextlayer.layer)
        except Exception as exc:
            logger.error("jitgate: next layer not checked (%s); parsing it as HTTP", type(exc).__name__)
            replaced = http_layer(nextlayer)
        if replaced is not None:
            logger.info("jitgate: a raw relay was asked for (%s); parsing it as HTTP instead", type(nextlayer.layer))
            nextlayer.layer = replaced

    def request(self, flow: http.HTTPFlow) -> None:
        if meta.refused(flow):
            return
        req = flow.request
        http1 = req.http_version.startswith("HTTP/1")
        wrong_target = target_error(
            host=req.host, port=req.port, scheme=req.scheme, host_headers=req.headers.get_all("host"),
            request_authority=req.authority, http1=http1,
        )
        if wrong_target is not None:
            req.host_header = authority(req.host, req.port, req.scheme)  # the record names the target
            refuse(flow, wrong_target)
            return
        if http1 and req.authority:
            # Absolute-form naming its own tunnel: sent on in origin-form, the path the scope checks
            # (mitmproxy does the same outside tunnels; inside, it sent the whole URL on).
            req.authority = ""
        # `Request.method` upper-cases what came: the bytes as sent are what the upstream reads.
        sent = req.data.method.decode("utf-8", "surrogateescape")
        # The raw fields: `Headers.keys()` costs ~20 us a request, this ~1.5 us.
        other = method_error(sent) or header_error(name.decode("latin-1") for name, _ in req.headers.fields)
        if other is not None:
            refuse(flow, other)
        elif "upgrade" in req.headers:
            refuse(flow, UpgradeNotAllowed("protocol upgrades (WebSocket and others) are not inspected, so refused"))
        elif req.trailers:
            refuse(flow, TrailersNotAllowed("request trailers are not inspected, so the request is refused"))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None and flow.response.status_code == 101 and flow.killable:
            logger.warning("jitgate: the upstream switched protocols unasked on flow %s; killed", flow.id)
            flow.kill()  # type: ignore[no-untyped-call]

    def response(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None and flow.response.trailers:
            logger.info("jitgate: trailers of the answer to flow %s dropped (not inspected)", flow.id)
            flow.response.trailers = None


addons = [HttpOnly()]
