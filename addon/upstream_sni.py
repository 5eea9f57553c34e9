"""upstream_sni: the upstream TLS handshake names the policy's upstream host, never the client's SNI.

mitmproxy fills `server.sni` from the client: when a request inside a CONNECT tunnel goes to the
tunnel's own host:port (a job whose URL is the upstream's real address), its HTTP layer copies the
client's ClientHello name onto the new upstream connection (`proxy/layers/http/__init__.py`,
`get_connection`, transparent mode), and `tlsconfig.tls_start_server` falls back to it as well.
Reproduced against a real gateway: a tunnel to the upstream's 127.0.0.1:port whose ClientHello said
`localhost` (or `LOCALHOST`, or a name the upstream does not serve) made the upstream handshake
name exactly that. On a front that routes by SNI the client so picked which backend received the
injected credential.

So, with the pure rules in jitgate/tls_names.py:
- `server_connect` (a public mitmproxy hook, run before the TCP connect and so before any TLS)
  sets `server.sni` to the host of the policy connection whose upstream is at the address being
  connected to, overwriting whatever mitmproxy put there. An address that is no connection's
  upstream is not connected to at all (`server.error`; the client gets 502).
- `requestheaders` refuses, 421 `misdirected_request`, a request whose client ClientHello named
  another host than its tunnel goes to: nothing is forwarded for a client that says one name and
  tunnels to another.
"""

from __future__ import annotations

import logging

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy.server_hooks import ServerConnectionHookData

from addon import meta, settings
from addon.respond import refuse
from jitgate.errors import MisdirectedRequest
from jitgate.policy import Policy
from jitgate.tls_names import misdirected, upstream_server_name

logger = logging.getLogger(__name__)

NOT_AN_UPSTREAM = "jitgate: this address is no connection's upstream; not connected"


class UpstreamSni:
    def __init__(self) -> None:
        self.policy: Policy | None = None

    def load(self, loader: Loader) -> None:
        settings.add_options(loader, *settings.SHARED)

    def configure(self, updated: set[str]) -> None:
        if updated & settings.SHARED:
            self.policy = settings.policy_from(ctx.options.jitgate_policy)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if meta.refused(flow):
            return
        tunnel = flow.server_conn.address  # the CONNECT target (scope_guard reads the tunnel the same way)
        if misdirected(flow.client_conn.sni, str(tunnel[0]) if tunnel is not None else None):
            refuse(flow, MisdirectedRequest("the TLS server name names another host than this tunnel goes to"))

    def server_connect(self, data: ServerConnectionHookData) -> None:
        # No flow hook (failsafe.py does not guard it): a failure here must fail closed by itself.
        server = data.server
        try:
            name = None
            if self.policy is not None and server.address is not None:
                name = upstream_server_name(self.policy, str(server.address[0]), int(server.address[1]))
        except Exception as exc:
            logger.error("jitgate: upstream name not decided (%s); not connecting", type(exc).__name__)
            name = None
        if name is None:
            server.error = NOT_AN_UPSTREAM
            return
        server.sni = name
