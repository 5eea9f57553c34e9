"""scope_guard's Chroma half (not an addon of the chain; the decisions are jitgate/chroma.py's).

A record call's collection id is resolved to its name from the store's earlier answers, else by
`lookup` (the store asked with the injected credential, handed in by the entry file), and refused
when it cannot be; record answers (get, query) keep only the granted fields, whatever their
status; list answers only the granted collections.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable

from mitmproxy import http

from addon import meta
from addon.body import NOT_JSON, json_body
from addon.body import text as body_text
from addon.respond import refuse
from jitgate import chroma, jsontext
from jitgate.decoding import bomb_check
from jitgate.errors import JitgateError, UpstreamResponseInvalid, UpstreamResponseTooLarge
from jitgate.policy import Connection, Policy
from jitgate.scope import STORE_DIALECTS
from jitgate.token import Claims

# (connection, path) -> (status, body) of a GET at the store with the injected credential.
StoreLookup = Callable[[Connection, str], Awaitable[tuple[int, bytes]]]


class StoreScope:
    def __init__(self, lookup: StoreLookup | None, clock: Callable[[], float]) -> None:
        self._lookup = lookup
        self._clock = clock
        self.names = chroma.CollectionNames()

    async def scope(
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

    def known_target(self, conn: Connection, flow: http.HTTPFlow, collection: str | None) -> str | None:
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

    def answer(self, flow: http.HTTPFlow, claims: Claims, conn: Connection, max_bytes: int) -> None:
        """A store's answer: ids learnt or forgotten, and cut to the token's fields and collections."""
        assert flow.response is not None
        state = meta.state_of(flow)
        operation = state.operation or ""
        ok = 200 <= flow.response.status_code < 300
        cut = chroma.answer_needs_cut(operation, claims.scope)
        learn = ok and operation in chroma.COLLECTION_ANSWERS
        if not (cut or learn or (ok and operation in chroma.FORGETTING)):
            return
        if _too_large(flow.response, max_bytes):
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


def store_call(flow: http.HTTPFlow, policy: Policy | None) -> tuple[Claims, Connection] | None:
    """The claims and connection of a store call, or None (no store, or no verified token)."""
    state = meta.state_of(flow)
    claims, conn = state.claims, state.connection_in(policy)
    if claims is None or conn is None or conn.dialect not in STORE_DIALECTS:
        return None
    return claims, conn


def _too_large(resp: http.Response, max_bytes: int) -> bool:
    """An encoded store answer that decodes past leak_guard's limit (sized, never decoded whole here:
    this hook runs before leak_guard's, which refuses it the same way)."""
    over = bomb_check(resp.raw_content or b"", resp.headers.get("content-encoding", ""), max_bytes)
    return over is True  # not decodable: get_content hands back the raw bytes, which are no JSON
