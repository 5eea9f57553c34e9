"""credential_inject: the real upstream credential goes on the request, and nowhere else.

The connection's secret comes from Secrets Manager through `aws-secretsmanager-caching` and is
held in memory only. Any client-supplied credential is stripped, the secret is set in the
connection's header format, and the request is pointed at the connection's real upstream (so a
client using its vendor's default URL works unchanged). If the upstream answers 401, the secret
is fetched afresh and the request sent once more by `CredentialRetry` (addon/credential_retry.py),
placed before the response checks so they run once, on the answer the client gets. Upstream TLS
trusts the public roots plus `jitgate_upstream_ca` if set (addon/upstream_client.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

from aws_secretsmanager_caching import SecretCache, SecretCacheConfig
from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader

from addon import credential_retry, meta, settings, worker_health
from addon.respond import refuse
from addon.upstream_client import UpstreamClient, apply_credential
from jitgate import credentials
from jitgate.errors import CredentialUnavailable, JitgateError
from jitgate.policy import Connection, Policy

logger = logging.getLogger(__name__)


class CredentialInject:
    def __init__(
        self,
        *,
        secretsmanager: Any = None,
        cache_factory: Callable[[Any], SecretCache] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        aws: settings.AwsClients | None = None,
        parts: worker_health.WorkerParts | None = None,
    ) -> None:
        self._aws = aws or settings.AwsClients()
        self._sm, self._given_sm = secretsmanager, secretsmanager is not None
        self._cache_factory = cache_factory or (
            lambda client: SecretCache(SecretCacheConfig(secret_refresh_interval=self.ttl), client)
        )
        # The hot path reads its memo without a thread hop.
        self.secrets = credentials.SecretSource(
            settings.DEFAULT_SECRET_TTL, lambda: self._cache_factory(self._sm), monotonic=monotonic
        )
        worker_health.publish(parts, secrets=self.secrets)  # its cache age, read by metrics
        # Flows that carry the injected credential until their `response` or `error` (see `done`).
        self._carrying: weakref.WeakSet[http.HTTPFlow] = weakref.WeakSet()
        self.ttl = settings.DEFAULT_SECRET_TTL
        self.policy: Policy | None = None
        self.upstream = UpstreamClient()

    def load(self, loader: Loader) -> None:
        settings.add_options(loader, *settings.SHARED, "jitgate_secret_ttl", "jitgate_upstream_ca")

    def configure(self, updated: set[str]) -> None:
        # Eager CONNECTs turn refusals into 502s from unreachable hosts; jitgate answers itself.
        opts = ctx.options
        lazy_needed = "connection_strategy" in opts and opts.connection_strategy != "lazy"
        if updated & {"connection_strategy", "jitgate_policy"} and lazy_needed:
            ctx.options.update(connection_strategy="lazy")  # type: ignore[no-untyped-call]
        if "jitgate_upstream_ca" in updated and ctx.options.jitgate_upstream_ca:
            self.upstream.trust(ctx.options.jitgate_upstream_ca)
        if updated & (settings.SHARED | {"jitgate_upstream_ca", "ssl_verify_upstream_trusted_ca", "ssl_insecure"}):
            self.upstream.reset()  # rebuilt with the current trust settings on first use
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
        self.upstream.close()

    async def request(self, flow: http.HTTPFlow) -> None:
        if meta.refused(flow):
            return
        conn = meta.state_of(flow).connection_in(self.policy)
        if conn is None:
            refuse(flow, JitgateError("the request was not checked against a scope"))
            return
        secret = self.secrets.fresh(conn)  # read less than `ttl` seconds ago (no IO), else a thread reads it
        try:
            if secret is None:
                secret = await asyncio.to_thread(self.secrets.get, conn)
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
        """Drop the injected credential from the finished flow (request header and flow state): what
        follows the chain (mitmproxy's flow writer for `-w`, mitmweb, `flow.copy()`) never sees it."""
        self._carrying.discard(flow)
        state = meta.state_of(flow)
        state.injected_secret = None
        if not state.injected:
            return
        conn = state.connection_in(self.policy)
        if conn is not None:
            flow.request.headers.pop(conn.credential.header, None)

    async def retry_on_401(self, flow: http.HTTPFlow) -> None:
        """Send the request once more with a fresh secret after a 401 (addon/credential_retry.py)."""
        await credential_retry.retry_on_401(flow, self.policy, self.secrets, self.upstream)

    async def store_lookup(self, conn: Connection, path: str) -> tuple[int, bytes]:
        """GET `path` at the store with its credential: (status, body). scope_guard asks the store so what
        a collection id names (handed in by the entry file); the answer never goes to a client."""
        secret = self.secrets.fresh(conn)
        if secret is None:
            secret = await asyncio.to_thread(self.secrets.get, conn)
        return await self.upstream.get_as(conn, secret, path)


class CredentialRetry:
    """The retry after a 401 as an addon of its own, before scope_guard's and leak_guard's response hooks."""

    def __init__(self, inject: CredentialInject) -> None:
        self.inject = inject

    async def response(self, flow: http.HTTPFlow) -> None:
        await self.inject.retry_on_401(flow)
