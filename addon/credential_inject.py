"""credential_inject: the real upstream credential goes on the request, and nowhere else.

The connection's secret comes from Secrets Manager through `aws-secretsmanager-caching` and is
held in memory only. Any client-supplied credential is stripped, the secret is set in the
connection's header format, and the request is pointed at the connection's real upstream (so a
client using its vendor's default URL works unchanged). If the upstream answers 401, the secret
is fetched afresh (rotation) and the request is sent once more with it: `CredentialRetry`, an addon
of its own placed before the response checks (scope_guard, leak_guard) in the chain, so they run
on the answer the client gets, once, without this module walking the chain.

Upstream TLS trusts the public roots plus an optional private CA (`jitgate_upstream_ca`):
mitmproxy's `ssl_verify_upstream_trusted_ca` replaces the roots, so a combined bundle is written.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import certifi
import httpx
from aws_secretsmanager_caching import SecretCache, SecretCacheConfig
from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader

from addon import meta, settings
from addon.respond import refuse
from jitgate import credentials
from jitgate.errors import CredentialUnavailable, JitgateError
from jitgate.policy import Connection, Policy

logger = logging.getLogger(__name__)

def apply_credential(request: http.Request, conn: Connection, secret: str) -> None:
    """Strip client credentials, set the connection's header and point at the real upstream."""
    present = {name.lower() for name in request.headers}
    for name in credentials.stripped_headers(conn):
        if name.lower() in present:  # one pass over the headers instead of one per name
            request.headers.pop(name, None)
    name, value = credentials.credential_header(conn, secret)
    request.headers[name] = value
    # Always set: the setters also rewrite the Host header / authority to the upstream's.
    request.scheme, request.port, request.host = credentials.upstream_target(conn)


def combined_bundle(private_ca: str) -> str:
    """A CA file holding the public roots plus `private_ca`, written owner-only; its path."""
    try:
        extra = Path(private_ca).read_bytes()
    except OSError as exc:
        raise settings.options_error(f"jitgate_upstream_ca: cannot read {private_ca}: {exc.strerror}") from None
    if b"BEGIN CERTIFICATE" not in extra:
        raise settings.options_error(f"jitgate_upstream_ca: {private_ca} holds no PEM certificate")
    fd, path = tempfile.mkstemp(prefix="jitgate-upstream-ca-", suffix=".pem")
    with os.fdopen(fd, "wb") as out:
        out.write(Path(certifi.where()).read_bytes() + b"\n" + extra)
    return path


class CredentialInject:
    def __init__(
        self,
        *,
        secretsmanager: Any = None,
        cache_factory: Callable[[Any], SecretCache] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        aws: settings.AwsClients | None = None,
    ) -> None:
        self._aws = aws or settings.AwsClients()
        self._sm = secretsmanager
        self._given_sm = secretsmanager is not None
        self._cache_factory = cache_factory or (
            lambda client: SecretCache(SecretCacheConfig(secret_refresh_interval=self.ttl), client)
        )
        # The hot path reads its memo without a thread hop.
        self.secrets = credentials.SecretSource(
            settings.DEFAULT_SECRET_TTL, lambda: self._cache_factory(self._sm), monotonic=monotonic
        )
        # Flows that carry the injected credential until their `response` or `error` (see `done`).
        self._carrying: weakref.WeakSet[http.HTTPFlow] = weakref.WeakSet()
        self.ttl = settings.DEFAULT_SECRET_TTL
        self.policy: Policy | None = None
        self._bundle: str | None = None
        self._http: httpx.AsyncClient | None = None

    def load(self, loader: Loader) -> None:
        settings.add_options(loader, *settings.SHARED, "jitgate_secret_ttl", "jitgate_upstream_ca")

    def configure(self, updated: set[str]) -> None:
        # Eager CONNECTs turn refusals into 502s from unreachable hosts; jitgate answers itself.
        opts = ctx.options
        lazy_needed = "connection_strategy" in opts and opts.connection_strategy != "lazy"
        if updated & {"connection_strategy", "jitgate_policy"} and lazy_needed:
            ctx.options.update(connection_strategy="lazy")  # type: ignore[no-untyped-call]
        if "jitgate_upstream_ca" in updated and ctx.options.jitgate_upstream_ca:
            self._bundle = combined_bundle(ctx.options.jitgate_upstream_ca)
            ctx.options.update(ssl_verify_upstream_trusted_ca=self._bundle)  # type: ignore[no-untyped-call]
        if updated & (settings.SHARED | {"jitgate_upstream_ca", "ssl_verify_upstream_trusted_ca", "ssl_insecure"}):
            self._http = None  # rebuilt with the current trust settings on first use
        if "jitgate_secret_ttl" in updated:
            self.ttl = settings.value(ctx.options, "jitgate_secret_ttl")
            self.secrets.set_ttl(self.ttl)
        if not (updated & settings.SHARED):
            return
        self.policy = settings.policy_from(ctx.options.jitgate_policy)
        if not self._given_sm:
            self._sm = self._aws.client("secretsmanager", ctx.options)
        self.secrets.reset()

    def done(self) -> None:
        # mitmproxy saves the flows still in flight when it stops (`-w`); its Save addon's `done`
        # runs after the script addons' (ScriptLoader comes first in the addon chain).
        for flow in list(self._carrying):
            self.forget(flow)
        if self._bundle is not None:
            Path(self._bundle).unlink(missing_ok=True)

    # -- secrets ----------------------------------------------------------------------------

    def cached_secret(self, conn: Connection) -> str | None:
        """The connection's credential if it was read less than `ttl` seconds ago (no IO)."""
        return self.secrets.fresh(conn)

    def secret(self, conn: Connection) -> str:
        """The connection's credential (blocking on a cache miss; run in a thread): jitgate.credentials."""
        return self.secrets.get(conn)

    # -- hooks ------------------------------------------------------------------------------

    async def request(self, flow: http.HTTPFlow) -> None:
        if meta.refused(flow):
            return
        conn = meta.state_of(flow).connection_in(self.policy)
        if conn is None:
            refuse(flow, JitgateError("the request was not checked against a scope"))
            return
        secret = self.cached_secret(conn)
        try:
            if secret is None:
                secret = await asyncio.to_thread(self.secret, conn)
        except Exception as exc:
            logger.warning("jitgate: credential of %s unavailable (%s)", conn.name, type(exc).__name__)
            refuse(flow, CredentialUnavailable(f"the credential of {conn.name!r} is unavailable"))
            return
        apply_credential(flow.request, conn, secret)
        state = meta.state_of(flow)
        state.injected = True
        state.injected_secret = secret  # in memory only: leak_guard masks it in the response
        self._carrying.add(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        self.forget(flow)  # after leak_guard masked the answer with the secret in hand

    def error(self, flow: http.HTTPFlow) -> None:
        self.forget(flow)

    def forget(self, flow: http.HTTPFlow) -> None:
        """Drop the injected credential from the finished flow (request header and flow state).

        What follows the chain (mitmproxy's flow writer for `-w`, mitmweb, a later `flow.copy()`)
        must never see the upstream secret.
        """
        self._carrying.discard(flow)
        state = meta.state_of(flow)
        state.injected_secret = None
        if not state.injected:
            return
        conn = state.connection_in(self.policy)
        if conn is not None:
            flow.request.headers.pop(conn.credential.header, None)

    async def retry_on_401(self, flow: http.HTTPFlow) -> None:
        """Send the request once more with a fresh secret when the upstream answered 401 to the injected one."""
        state = meta.state_of(flow)
        status = flow.response.status_code if flow.response is not None else None
        if not credentials.retry_after_401(status, injected=state.injected, retried=state.credential_retried):
            return
        state.credential_retried = True
        conn = state.connection_in(self.policy)
        if conn is None:
            return
        old = flow.request.headers.get(conn.credential.header)
        fresh = await asyncio.to_thread(self.secrets.rotate, conn)
        if fresh is None:
            return
        apply_credential(flow.request, conn, fresh)
        state.injected_secret = fresh
        if flow.request.headers.get(conn.credential.header) == old:
            return  # same credential: another try would get the same 401
        try:
            flow.response = await self._resend(flow.request)
        except httpx.HTTPError as exc:
            logger.warning("jitgate: retry after 401 on %s failed (%s)", conn.name, type(exc).__name__)

    async def store_lookup(self, conn: Connection, path: str) -> tuple[int, bytes]:
        """GET `path` at the connection's upstream with its credential: (status, body).

        scope_guard asks the store this way what a collection id names (handed in by the entry
        file); the answer goes to scope_guard only, never to a client.
        """
        secret = self.cached_secret(conn)
        if secret is None:
            secret = await asyncio.to_thread(self.secret, conn)
        if self._http is None:
            self._http = httpx.AsyncClient(verify=self._verify(), timeout=30.0, follow_redirects=False)
        header = {conn.credential.header: conn.credential.format.replace("{secret}", secret)}
        resp = await self._http.get(conn.upstream.rstrip("/") + path, headers=header)
        return resp.status_code, resp.content

    async def _resend(self, request: http.Request) -> http.Response:
        if self._http is None:
            self._http = httpx.AsyncClient(verify=self._verify(), timeout=30.0, follow_redirects=False)
        fields = request.headers.items(multi=True)  # type: ignore[no-untyped-call]
        headers = [(k, v) for k, v in fields if k.lower() not in credentials.HOP_BY_HOP]
        req = self._http.build_request(request.method, request.url, headers=headers, content=request.raw_content)
        resp = await self._http.send(req, stream=True)
        try:
            body = b"".join([chunk async for chunk in resp.aiter_raw()])
        finally:
            await resp.aclose()
        dropped = credentials.HOP_BY_HOP | {"content-length"}
        out_headers = [(k.encode(), v.encode()) for k, v in resp.headers.multi_items() if k.lower() not in dropped]
        out_headers.append((b"content-length", str(len(body)).encode()))
        answer = http.Response.make(resp.status_code, b"", http.Headers(out_headers))
        answer.raw_content = body  # as the upstream encoded it; its headers say how
        return answer

    def _verify(self) -> ssl.SSLContext | bool:
        if ctx.options.ssl_insecure:
            return False
        return ssl.create_default_context(cafile=ctx.options.ssl_verify_upstream_trusted_ca or certifi.where())


class CredentialRetry:
    """credential_inject's retry after a 401, as an addon of its own: it comes before scope_guard and
    leak_guard in the chain, so their response hooks see only the answer the client gets."""

    def __init__(self, inject: CredentialInject) -> None:
        self.inject = inject

    async def response(self, flow: http.HTTPFlow) -> None:
        await self.inject.retry_on_401(flow)
