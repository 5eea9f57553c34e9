"""scope_guard: a verified token may do only what its scope and limits say, only on its connection.

The token's `conn` claim picks the connection; it must serve the request's host (one of its public
names or its real upstream) and, inside a CONNECT tunnel, the tunnel's host too. Several connections
may share a host, so the host alone never picks one. Hosts of no connection are refused, on CONNECT
already (before any token is known), so the gateway is no open proxy. Method + path map
to the connection's named operations; operations and collections outside the token's scope
are refused, as are bodies over `max_bytes` and rerank calls over `max_documents`.
`max_requests` is a conditional DynamoDB counter, so it holds across gateway instances; each
gateway reserves uses in small blocks (`jitgate_usage_lease`) so most requests make no AWS call.

For a Chroma store (the decisions are jitgate/chroma.py's): a record call's collection id is
resolved to its name from the store's earlier answers, else by `lookup` (the store asked with the
injected credential, handed in by the entry file), and refused when it cannot be; record answers
(get, query) keep only the granted fields, whatever their status; list answers only the granted
collections.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader

from addon import meta, settings
from addon.body import NOT_JSON, json_body
from addon.body import text as body_text
from addon.respond import refuse
from jitgate import chroma, jsontext, scope_check
from jitgate.decoding import bomb_check
from jitgate.errors import (
    BodyNotDecodable,
    HostNotAllowed,
    InvalidToken,
    JitgateError,
    PayloadTooLarge,
    RequestLimitExceeded,
    UpstreamResponseInvalid,
    UpstreamResponseTooLarge,
    UsageUnavailable,
)
from jitgate.policy import Connection, Policy
from jitgate.scope import STORE_DIALECTS, lease_size, scope_error
from jitgate.scope_check import UsageLeases
from jitgate.state import reserve_requests
from jitgate.token import Claims

# (connection, path) -> (status, body) of a GET at the store with the injected credential.
StoreLookup = Callable[[Connection, str], Awaitable[tuple[int, bytes]]]


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
        self._lookup = lookup
        self._clock = clock
        self.names = chroma.CollectionNames()
        self._given_dynamodb = dynamodb is not None
        self._usage = UsageLeases()
        self._locks: dict[str, asyncio.Lock] = {}
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
                err, collection = await self._store_scope(claims, conn, flow, collection)
            else:  # refused already: the record still names tenant, database and a known collection
                collection = self._known_target(conn, flow, collection)
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
                within = await self._count(claims)
            except Exception:
                refuse(flow, UsageUnavailable("the request counter cannot be updated; refused until it can"))
                return
            if not within:
                refuse(flow, RequestLimitExceeded(f"this token's {claims.limits.max_requests} requests are used up"))
                return
        state = meta.state_of(flow)
        state.use_connection(conn)
        state.operation, state.collection = operation, collection

    # -- Chroma: collection ids to names ----------------------------------------------------

    async def _store_scope(
        self, claims: Claims, conn: Connection, flow: http.HTTPFlow, collection: str | None
    ) -> tuple[JitgateError | None, str | None]:
        """The Chroma scope check with the collection's name resolved: (error or None, name)."""
        req = chroma.parse_request(conn.routes, flow.request.method, flow.request.path)
        if req is None:
            return None, collection  # a route of the connection's own: scope_error checked it
        state = meta.state_of(flow)
        state.tenant, state.database = req.tenant, req.database
        if req.operation in chroma.BODY_NAMED:
            text = body_text(flow)
            if text.problem is not None:
                return jsontext.refusal(text.problem), req.collection
            named = chroma.with_body(req, None if text.value is NOT_JSON else text.value)
            if isinstance(named, JitgateError):
                return named, req.collection
            req = named
        if req.operation in chroma.RECORD_ANSWERS and claims.scope.fields is not None:
            text = body_text(flow)
            if text.problem is not None:
                return jsontext.refusal(text.problem), req.collection
            hidden = chroma.filter_error(claims.scope, req.operation, text.value)
            if hidden is not None:
                return hidden, req.collection
        err = chroma.database_error(claims.scope, req)  # before asking the store anything
        if err is None and req.collection_id is not None and req.collection is None:
            req = dataclasses.replace(req, collection=await self._name_of(conn, req))
        if err is None:
            err = chroma.scope_error(claims.scope, req)
        return err, req.collection

    def _known_target(self, conn: Connection, flow: http.HTTPFlow, collection: str | None) -> str | None:
        """Tenant and database of a refused Chroma call, and its collection's name if known (no lookup)."""
        req = chroma.parse_request(conn.routes, flow.request.method, flow.request.path)
        if req is None:
            return collection
        state = meta.state_of(flow)
        state.tenant, state.database = req.tenant, req.database
        if req.collection is not None or req.collection_id is None or req.tenant is None or req.database is None:
            return req.collection or collection
        return self.names.name_of(conn.name, req.tenant, req.database, req.collection_id, now=self._clock())

    async def _name_of(self, conn: Connection, req: chroma.ChromaRequest) -> str | None:
        cid, tenant, database = req.collection_id, req.tenant, req.database
        if cid is None or tenant is None or database is None or not chroma.valid_id(cid):
            return None
        name = self.names.name_of(conn.name, tenant, database, cid, now=self._clock())
        if name is not None or self._lookup is None:
            return name
        try:
            status, content = await self._lookup(conn, chroma.lookup_path(tenant, database, cid))
        except Exception:
            return None  # unresolved: refused, never passed
        answer = jsontext.read(content, "application/json", strict=False).value if status == 200 else None
        self.names.learn(conn.name, answer, now=self._clock(), tenant=tenant, database=database)
        return self.names.name_of(conn.name, tenant, database, cid, now=self._clock())

    async def _count(self, claims: Claims) -> bool:
        """One use of the token's `max_requests`, from this gateway's reservation or a new one."""
        if self._usage.take(claims.jti):
            return True
        if claims.jti in self._usage.exhausted:
            return False
        lock = self._locks.setdefault(claims.jti, asyncio.Lock())
        async with lock:
            if self._usage.take(claims.jti):  # another request refilled it meanwhile
                return True
            if claims.jti in self._usage.exhausted:
                return False
            assert claims.limits.max_requests is not None
            block = lease_size(claims.limits.max_requests, self.lease)
            granted = await asyncio.to_thread(reserve_requests, self._dynamodb, self.table, claims, block)
            if self._usage.full():
                for jti in self._usage.prune(time.time()):
                    self._locks.pop(jti, None)
            return self._usage.granted(claims.jti, claims.exp, granted)

    def _store(self, flow: http.HTTPFlow) -> tuple[Claims, Connection] | None:
        """The claims and connection of a store call, or None (no store, or no verified token)."""
        state = meta.state_of(flow)
        claims, conn = state.claims, state.connection_in(self.policy)
        if claims is None or conn is None or conn.dialect not in STORE_DIALECTS:
            return None
        return claims, conn

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        # A store answer is read whole, whatever its framing (chunked, an event stream): it is
        # buffered (bounded by the inspection limit), never streamed past the filter.
        state = meta.state_of(flow)
        if state.error is None and flow.response is not None and self._store(flow) is not None:
            state.buffer_response = True

    def response(self, flow: http.HTTPFlow) -> None:
        if meta.state_of(flow).error is not None or flow.response is None:
            return
        store = self._store(flow)
        if store is None:
            return
        claims, conn = store
        state = meta.state_of(flow)
        operation = state.operation or ""
        ok = 200 <= flow.response.status_code < 300
        cut = chroma.answer_needs_cut(operation, claims.scope)
        learn = ok and operation in chroma.COLLECTION_ANSWERS
        if not (cut or learn or (ok and operation in chroma.FORGETTING)):
            return
        if self._response_too_large(flow.response):
            flow.response = None
            refuse(flow, UpstreamResponseTooLarge("the upstream response exceeds the gateway's inspection limit"))
            return
        content = flow.response.get_content(strict=False) or b""
        body = json_body(flow, "response") if content.strip() else None
        if body is NOT_JSON and cut:
            flow.response = None
            msg = "the store's answer is not JSON, so it cannot be limited to your scope"
            refuse(flow, UpstreamResponseInvalid(msg))
            return
        default_tenant, default_database = chroma.scope_tenant(claims.scope)
        tenant, database = state.tenant or default_tenant, state.database or default_database
        now = self._clock()
        if learn:
            self.names.learn(conn.name, body, now=now, tenant=tenant, database=database)
        elif ok:  # dropped, or renamed: its id no longer means the old name
            self.names.forget(conn.name, tenant, database, name=state.collection)
        if cut and body is not None:
            flow.response.set_content(json.dumps(chroma.cut_answer(operation, body, claims.scope)).encode())

    @staticmethod
    def _response_too_large(resp: http.Response) -> bool:
        """An encoded store answer that decodes past leak_guard's limit (sized, never decoded whole here:
        this hook runs before leak_guard's, which refuses it the same way)."""
        over = bomb_check(resp.raw_content or b"", resp.headers.get("content-encoding", ""),
                          int(ctx.options.jitgate_max_inspect_bytes))
        return over is True  # not decodable: get_content hands back the raw bytes, which are no JSON
