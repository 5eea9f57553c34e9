"""Close a flow's upstream connection from an addon, while mitmproxy waits on it or reads from it.

mitmproxy has no command for this. Its proxyserver addon keeps one connection handler per
client connection (`Proxyserver.connections`, keyed by the client connection's id); the handler
keeps the reader/writer of each open connection (`transports`). Closing the writer ends the
socket (the upstream sees it at once) and the handler's read loop then sees end of file, exactly
as if the upstream had hung up: the HTTP layer reports it to the flow (`error` hook, then a 502
to the client, addon/error_answers.py) and closes the connection itself. Cancelling the read task
instead (the handler's own `close_connection`) is not safe from here: a task cancelled while it
waits for the handler's event lock ends without closing its socket. Only a connection that is
still connecting (no writer yet) is closed by cancelling, which mitmproxy handles as a failed
connect. tests/addon/test_upstream_timeout.py fails if a mitmproxy upgrade moves these attributes.
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
    io = handler.transports.get(conn)
    if io is None:
        return False
    if io.writer is None:
        handler.close_connection(conn)  # still connecting: the connect is cancelled
    else:
        io.writer.close()
    return True
