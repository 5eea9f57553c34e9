"""scope_guard: a verified token may do only what its scope and limits say, only on its connection.

The token's `conn` claim picks the connection; it must serve the request's host (one of its public
names or its real upstream) and, inside a CONNECT tunnel, the tunnel's host too. Several connections
may share a host, so the host alone never picks one. Hosts of no connection are refused, on CONNECT
already (before any token is known), so the gateway is no open proxy. Method + path map
to the connection's named operations; operations and collections outside the token's scope
are refused, as are bodies over `max_bytes` and rerank calls over `max_documents`.
`max_requests` is a conditional DynamoDB counter, so it holds across gateway instances; each
gateway reserves uses in small blocks (`jitgate_usage_lease`) so most requests make no AWS call. For a
store, JSON responses keep only the fields ("columns") the token was granted.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader

from addon import meta, settings
from addon.body import NOT_JSON, json_body
from addon.body import text as body_text
from addon.respond import refuse
from jitgate import jsontext
from jitgate.decoding import DEFAULT_DECODED_LIMIT, bomb_check
from jitgate.errors import (
    BadRequest,
    BodyNotDecodable,
    HostNotAllowed,
    InvalidToken,
    JitgateError,
    PayloadTooLarge,
    RequestLimitExceeded,
    UpstreamResponseInvalid,
    UpstreamResponseTooLarge,
    UsageUnavailable,
    WrongConnection,
)
from jitgate.policy import Connection, Policy
from jitgate.scope import STORE_DIALECTS, document_count, filter_fields, lease_size, scope_error
from jitgate.state import reserve_requests
from jitgate.token import Claims

_USAGE_PRUNE_AT = 10_000


class _Usage:
    """This gateway's unused reservations per token, refilled from the shared counter."""

    def __init__(self) -> None:
        self.left: dict[str, tuple[int, int]] = {}  # jti -> (reserved uses left, token exp)
        self.locks: dict[str, asyncio.Lock] = {}
        # Counters only grow: once a token's budget is gone, refuse it here without asking again.
        self.exhausted: dict[str, int] = {}  # jti -> token exp

    def take(self, jti: str) -> bool:
        left, exp = self.left.get(jti, (0, 0))
        if left <= 0:
            return False
        self.left[jti] = (left - 1, exp)
        return True

    def prune(self, now: float) -> None:
        for jti in [j for j, (_, exp) in self.left.items() if exp < now]:
            self.left.pop(jti, None)
            self.locks.pop(jti, None)
        for jti in [j for j, exp in self.exhausted.items() if exp < now]:
            self.exhausted.pop(jti, None)


class ScopeGuard:
    def __init__(self, *, dynamodb: Any = None) -> None:
        self._dynamodb = dynamodb
        self._given_dynamodb = dynamodb is not None
        self._usage = _Usage()
        self.lease = settings.DEFAULT_LEASE
        self.policy: Policy | None = None
        self.table = ""

    def load(self, loader: Loader) -> None:
        settings.add_options(loader, *settings.SHARED, "jitgate_usage_lease", "jitgate_max_inspect_bytes")

    def configure(self, updated: set[str]) -> None:
        if "jitgate_usage_lease" in updated:
            if not 1 <= ctx.options.jitgate_usage_lease <= 1000:
                raise settings.options_error("jitgate_usage_lease must be between 1 and 1000")
            self.lease = ctx.options.jitgate_usage_lease
        if not (updated & settings.SHARED):
            return
        self.policy = settings.policy_from(ctx.options.jitgate_policy)
        self.table = ctx.options.jitgate_table
        if not self.table:
            raise settings.options_error("jitgate_table is required: per-token request counters live in it")
        if not self._given_dynamodb:
            self._dynamodb = settings.aws_client(
                "dynamodb", endpoint=ctx.options.jitgate_aws_endpoint, region_name=ctx.options.jitgate_aws_region
            )

    def _served(self, host: str) -> bool:
        return bool(self.policy.connections_for_host(host)) if self.policy is not None else False

    def token_connection(self, claims: Claims, flow: http.HTTPFlow) -> Connection | JitgateError:
        """The token's connection for `flow`, or why the flow may not use it.

        Only the token names the connection: a Host header, CONNECT target or key header can at
        most make the request fail, never switch it to another connection serving the same host.
        """
        host = flow.request.host
        tunnel = flow.server_conn.address
        if self.policy is None or not self._served(host) or (tunnel is not None and not self._served(str(tunnel[0]))):
            return HostNotAllowed("this host belongs to no connection; the gateway is no open proxy")
        conn = self.policy.connection_for_host(host, claims.conn)
        if conn is None:
            return WrongConnection(f"this token is for connection {claims.conn!r}, which does not serve this host")
        # Inside a CONNECT tunnel the Host header must stay on the tunnel's connection.
        if tunnel is not None and self.policy.connection_for_host(str(tunnel[0]), claims.conn) is None:
            return HostNotAllowed("the Host header leaves the tunnel's connection")
        return conn

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if meta.refused(flow):
            return
        if not self._served(flow.request.host):
            refuse(flow, HostNotAllowed("this host belongs to no connection; the gateway is no open proxy"))

    async def request(self, flow: http.HTTPFlow) -> None:
        if meta.refused(flow):
            return
        claims = meta.claims(flow)
        if claims is None:
            refuse(flow, InvalidToken("no verified token for this request"))
            return
        conn = self.token_connection(claims, flow)
        if isinstance(conn, JitgateError):
            refuse(flow, conn)
            return
        err, operation, collection = scope_error(claims, conn, flow.request.method, flow.request.path)
        if err is not None:
            refuse(flow, err)
            return
        limit_err = self._limits_error(claims, conn, operation, flow)
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
        meta.set_connection(flow, conn)
        flow.metadata[meta.OPERATION] = operation
        flow.metadata[meta.COLLECTION] = collection

    async def _count(self, claims: Claims) -> bool:
        """One use of the token's `max_requests`, from this gateway's reservation or a new one."""
        if self._usage.take(claims.jti):
            return True
        if claims.jti in self._usage.exhausted:
            return False
        lock = self._usage.locks.setdefault(claims.jti, asyncio.Lock())
        async with lock:
            if self._usage.take(claims.jti):  # another request refilled it meanwhile
                return True
            if claims.jti in self._usage.exhausted:
                return False
            assert claims.limits.max_requests is not None
            block = lease_size(claims.limits.max_requests, self.lease)
            granted = await asyncio.to_thread(reserve_requests, self._dynamodb, self.table, claims, block)
            if len(self._usage.left) + len(self._usage.exhausted) > _USAGE_PRUNE_AT:
                self._usage.prune(time.time())
            if granted == 0:
                self._usage.exhausted[claims.jti] = claims.exp
                return False
            self._usage.left[claims.jti] = (granted - 1, claims.exp)
            return True

    def _limits_error(
        self, claims: Claims, conn: Connection, operation: str, flow: http.HTTPFlow
    ) -> JitgateError | None:
        limits = claims.limits
        req = flow.request
        raw = req.raw_content or b""
        if limits.max_bytes is not None and len(raw) > limits.max_bytes:
            return PayloadTooLarge(f"the request body is over this token's {limits.max_bytes} bytes")
        # Sized without decoding it whole: a gzip bomb must not cost its decoded size.
        bound = limits.max_bytes if limits.max_bytes is not None else DEFAULT_DECODED_LIMIT
        over = bomb_check(raw, req.headers.get("content-encoding", ""), bound)
        if over is None:
            return BodyNotDecodable("the request body's content encoding cannot be decoded")
        if over:
            return PayloadTooLarge(f"the request body is over {bound} bytes once decoded")
        if limits.max_documents is None:
            return None
        text = body_text(flow)  # read once per flow, shared with leak_guard, approval_hold and the recorder
        if text.problem is not None:
            return jsontext.refusal(text.problem)  # as leak_guard would answer it
        body = text.value
        if body is NOT_JSON:
            return BadRequest("the request body is not JSON, so its documents cannot be counted")
        count = document_count(conn.dialect, operation, body)
        if count is None:
            return BadRequest("the request's documents cannot be counted")
        if count > limits.max_documents:
            return PayloadTooLarge(f"{count} documents are over this token's {limits.max_documents}")
        return None

    def _fields(self, flow: http.HTTPFlow) -> tuple[str, ...] | None:
        """The fields a store answer is limited to, or None (no limit, or no store)."""
        claims = meta.claims(flow)
        conn = meta.connection(flow, self.policy)
        if claims is None or conn is None or conn.dialect not in STORE_DIALECTS:
            return None
        return claims.scope.fields

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        # A limited answer is filtered whole, whatever its framing (chunked, an event stream): it
        # is buffered (bounded by the inspection limit), never streamed past the filter.
        if meta.ERROR not in flow.metadata and flow.response is not None and self._fields(flow) is not None:
            flow.metadata[meta.BUFFER_RESPONSE] = True

    def response(self, flow: http.HTTPFlow) -> None:
        if meta.ERROR in flow.metadata or flow.response is None:
            return
        fields = self._fields(flow)
        if fields is None or not 200 <= flow.response.status_code < 300:
            return
        if self._response_too_large(flow.response):
            flow.response = None
            refuse(flow, UpstreamResponseTooLarge("the upstream response exceeds the gateway's inspection limit"))
            return
        content = flow.response.get_content(strict=False) or b""
        if not content.strip():
            return
        body = json_body(flow, "response")
        if body is NOT_JSON:
            flow.response = None
            msg = "the store's answer is not JSON, so it cannot be limited to your fields"
            refuse(flow, UpstreamResponseInvalid(msg))
            return
        flow.response.set_content(json.dumps(filter_fields(body, fields)).encode())

    @staticmethod
    def _response_too_large(resp: http.Response) -> bool:
        """An encoded store answer that decodes past leak_guard's limit (sized, never decoded whole here:
        this hook runs before leak_guard's, which refuses it the same way)."""
        over = bomb_check(resp.raw_content or b"", resp.headers.get("content-encoding", ""),
                          int(ctx.options.jitgate_max_inspect_bytes))
        return over is True  # not decodable: get_content hands back the raw bytes, which are no JSON
