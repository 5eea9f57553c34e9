"""scope_guard: a verified token may do only what its scope and limits say, only on its connection.

The token's `conn` claim picks the connection; it must serve the request's host (one of its public
names or its real upstream) and, inside a CONNECT tunnel, the tunnel's host too. Several connections
may share a host, so the host alone never picks one. Hosts of no connection are refused, on CONNECT
already (before any token is known), so the gateway is no open proxy. Method + path map
to the connection's named operations; operations and collections outside the token's scope
are refused, as are bodies over `max_bytes` and rerank calls over `max_documents`.
`max_requests` is a conditional DynamoDB counter, so it holds across gateway instances; each
gateway reserves uses in small blocks (`jitgate_usage_lease`) so most requests make no AWS call.

A Chroma store's checks and answer filter: addon/store_scope.py; the counter: addon/usage_counter.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader

from addon import meta, settings
from addon.body import text as body_text
from addon.respond import refuse
from addon.store_scope import StoreLookup, StoreScope, store_call
from addon.usage_counter import UsageCounter
from jitgate import scope_check
from jitgate.errors import (
    BodyNotDecodable,
    HostNotAllowed,
    InvalidToken,
    JitgateError,
    PayloadTooLarge,
    RequestLimitExceeded,
    UsageUnavailable,
)
from jitgate.policy import Connection, Policy
from jitgate.scope import STORE_DIALECTS, scope_error
from jitgate.token import Claims


class ScopeGuard:
    def __init__(
        self,
        *,
        dynamodb: Any = None,
        aws: settings.AwsClients | None = None,
        lookup: StoreLookup | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._aws = aws or settings.AwsClients()
        self._dynamodb = dynamodb
        self.store = StoreScope(lookup, clock)
        self._given_dynamodb = dynamodb is not None
        self._usage = UsageCounter()
        self.lease = settings.DEFAULT_LEASE
        self.policy: Policy | None = None
        self.table = ""

    def load(self, loader: Loader) -> None:
        settings.add_options(loader, *settings.ScopeGuardSettings.NAMES)

    def configure(self, updated: set[str]) -> None:
        if not updated & set(settings.ScopeGuardSettings.NAMES):
            return
        s = settings.scope_guard(ctx.options)
        self.lease, self.policy, self.table = s.lease, s.policy, s.table
        if not self._given_dynamodb:
            self._dynamodb = self._aws.client("dynamodb", ctx.options)

    def token_connection(self, claims: Claims, flow: http.HTTPFlow) -> Connection | JitgateError:
        """The token's connection for `flow`, or why the flow may not use it (jitgate.scope_check)."""
        tunnel = flow.server_conn.address
        tunnel_host = str(tunnel[0]) if tunnel is not None else None
        return scope_check.token_connection(self.policy, claims, flow.request.host, tunnel_host)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if meta.refused(flow):
            return
        if not scope_check.served(self.policy, flow.request.host):
            refuse(flow, HostNotAllowed(scope_check.NO_OPEN_PROXY))

    async def request(self, flow: http.HTTPFlow) -> None:
        if meta.refused(flow):
            return
        claims = meta.state_of(flow).claims
        if claims is None:
            refuse(flow, InvalidToken("no verified token for this request"))
            return
        conn = self.token_connection(claims, flow)
        if isinstance(conn, JitgateError):
            refuse(flow, conn)
            return
        err, operation, collection = scope_error(claims, conn, flow.request.method, flow.request.path)
        if conn.dialect in STORE_DIALECTS:
            if err is None:
                err, collection = await self.store.scope(claims, conn, flow, collection)
            else:  # refused already: the record still names tenant, database and a known collection
                collection = self.store.known_target(conn, flow, collection)
        if err is not None:
            state = meta.state_of(flow)  # the record says what was refused
            state.operation, state.collection = operation or None, collection
            refuse(flow, err)
            return
        req = flow.request
        limit_err = scope_check.limits_error(
            claims.limits, conn.dialect, operation, req.raw_content or b"", req.headers.get("content-encoding", ""),
            lambda: body_text(flow),  # read once per flow, shared with leak_guard, approval_hold and the recorder
        )
        if limit_err is not None:
            if isinstance(limit_err, PayloadTooLarge | BodyNotDecodable):
                flow.request.headers.pop("content-encoding", None)  # nothing after this decodes it (recorder)
            refuse(flow, limit_err)
            return
        if claims.limits.max_requests is not None:
            try:
                within = await self._usage.count(claims, dynamodb=self._dynamodb, table=self.table, lease=self.lease)
            except Exception:
                refuse(flow, UsageUnavailable("the request counter cannot be updated; refused until it can"))
                return
            if not within:
                refuse(flow, RequestLimitExceeded(f"this token's {claims.limits.max_requests} requests are used up"))
                return
        state = meta.state_of(flow)
        state.use_connection(conn)
        state.operation, state.collection = operation, collection

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        # A store answer is read whole, whatever its framing (chunked, an event stream): it is
        # buffered (bounded by the inspection limit), never streamed past the filter.
        state = meta.state_of(flow)
        if state.error is None and flow.response is not None and store_call(flow, self.policy) is not None:
            state.buffer_response = True

    def response(self, flow: http.HTTPFlow) -> None:
        if meta.state_of(flow).error is not None or flow.response is None:
            return
        store = store_call(flow, self.policy)
        if store is None:
            return
        claims, conn = store
        self.store.answer(flow, claims, conn, int(ctx.options.jitgate_max_inspect_bytes))
