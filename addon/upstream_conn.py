"""Close a flow's upstream connection from an addon, while mitmproxy waits on it.

mitmproxy has no command for this. Its proxyserver addon keeps one connection handler per
client connection (`Proxyserver.connections`, keyed by the client connection's id); the handler
holds a task per open connection (`transports`) and closes one with `close_connection`, the same
call it makes for a layer's CloseConnection command. Closing ends the read task, the HTTP layer
sees the upstream close, and the flow goes through mitmproxy's usual path for an upstream that
hung up: `error` hook, then a 502 to the client (addon/error_answers.py).
tests/addon/test_upstream_timeout.py fails if a mitmproxy upgrade moves these attributes.
"""

from __future__ import annotations

import logging
from typing import Any

from mitmproxy import ctx, http

logger = logging.getLogger(__name__)


def _handler(flow: http.HTTPFlow) -> Any:
    proxyserver = ctx.master.addons.get("proxyserver")  # type: ignore[no-untyped-call]
    connections = getattr(proxyserver, "connections", None)
    if not isinstance(connections, dict):
        return None
    return connections.get(flow.client_conn.id)


def close_upstream(flow: http.HTTPFlow) -> bool:
    """Close `flow`'s server connection (also one still connecting); False when there is none to close."""
    handler = _handler(flow)
    if handler is None:
        return False
    conn = flow.server_conn
    if conn not in handler.transports:
        return False
    handler.close_connection(conn)
    return True
