"""token_gate: every request carries a valid, unrevoked JIT token, or it goes no further.

The token comes as proxy credentials (`Proxy-Authorization` on CONNECT, bound to that client
connection, or on a plain-HTTP proxy request) or in place of the upstream API key
(`Authorization: Bearer`, or the key header of any connection serving the host: several
connections may share a host, and only the verified token says which one it is for). It is verified with
`jitgate.token.verify_token` against the broker's JWKS; the result is cached by the token's
SHA-256 until `exp`, so the hot path does no crypto. Revocations are pulled from DynamoDB by a
background thread; a list older than its staleness bound refuses everything (fail closed).
Revocations come from addon/revocations.py. The token is removed from everything forwarded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from mitmproxy import connection, ctx, http
from mitmproxy.addonmanager import Loader

from addon import meta, settings, worker_health
from addon.respond import refuse
from addon.revocations import RevocationList
from jitgate.errors import (
    InvalidToken,
    JitgateError,
    RevocationUnavailable,
    TokenRequired,
    TokenRevoked,
)
from jitgate.policy import Policy
from jitgate.token import KeySet
from jitgate.token_intake import TokenVerifier, proxy_token, strip_copies, take_token, token_sha256

logger = logging.getLogger(__name__)

JWKS_PATH = settings.JWKS_PATH
PROXY_AUTHENTICATE = 'Basic realm="jitgate"'


class TokenGate:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        jwks_fetcher: Callable[[str], KeySet] = settings.fetch_jwks,
        dynamodb: Any = None,
        aws: settings.AwsClients | None = None,
        parts: worker_health.WorkerParts | None = None,
    ) -> None:
        self._aws = aws or settings.AwsClients()
        self._given_dynamodb = dynamodb is not None
        self.revocations = RevocationList(clock=clock, monotonic=monotonic)
        self.revocations.dynamodb = dynamodb
        self.policy: Policy | None = None
        self.verifier = TokenVerifier(jwks_fetcher, clock=clock, monotonic=monotonic)
        worker_health.publish(parts, verifier=self.verifier, revocations=self.revocations)  # probe, metrics
        self._bound: dict[str, str] = {}

    # -- configuration ----------------------------------------------------------------------

    def load(self, loader: Loader) -> None:
        settings.add_options(loader, *settings.TokenGateSettings.NAMES)

    def configure(self, updated: set[str]) -> None:
        if "onboarding" in updated and "onboarding" in ctx.options and ctx.options.onboarding:
            # mitmproxy's onboarding app (http://mitm.it through the proxy) answers before the chain
            # runs: its page and the CA download to anyone, with no token. Nothing is answered
            # without a token here, so it is switched off, whatever the command line said.
            ctx.options.update(onboarding=False)  # type: ignore[no-untyped-call]
            logger.info("jitgate: mitmproxy's onboarding app is off (it answers without a token)")
        if not updated & set(settings.TokenGateSettings.NAMES):
            return
        s = settings.token_gate(ctx.options, JWKS_PATH)
        self.policy = s.policy
        self.verifier.configure(
            s.jwks_url, s.issuer, refetch_interval=s.jwks_refetch_interval, refresh_interval=s.jwks_refresh
        )
        self.revocations.table = s.table
        self.revocations.interval, self.revocations.staleness = s.revocation_refresh, s.revocation_staleness
        if not self._given_dynamodb:
            self.revocations.dynamodb = self._aws.client("dynamodb", ctx.options)

    def running(self) -> None:
        # One synchronous round at start so the first requests are not refused as stale.
        self.refresh_keys()
        self.revocations.refresh()
        self.revocations.start(tick=self.verifier.routine)

    def done(self) -> None:
        self.revocations.stop()

    def refresh_keys(self) -> bool:
        """Fetch the broker's JWKS now (blocking): jitgate.token_intake.TokenVerifier."""
        return self.verifier.refresh()

    # -- hooks ------------------------------------------------------------------------------

    def http_connect(self, flow: http.HTTPFlow) -> None:
        header = flow.request.headers.get("Proxy-Authorization")
        if header is None:
            return
        del flow.request.headers["Proxy-Authorization"]
        token = proxy_token(header)
        if token is not None:
            self._bound[flow.client_conn.id] = token

    def client_disconnected(self, client: connection.Client) -> None:
        self._bound.pop(client.id, None)

    async def request(self, flow: http.HTTPFlow) -> None:
        if meta.refused(flow):
            return
        conns = self.policy.connections_for_host(flow.request.host) if self.policy is not None else ()
        meta.state_of(flow).host_dialect = self.policy.dialect_for_host(flow.request.host) if self.policy else None
        token = take_token(flow.request.headers, conns) or self._bound.get(flow.client_conn.id)
        if token is None:
            refuse(
                flow,
                TokenRequired("a JIT token is required: send it as proxy credentials or as the API key"),
                headers={"Proxy-Authenticate": PROXY_AUTHENTICATE},
            )
            return
        strip_copies(flow.request.headers, token)
        if not self.revocations.fresh():
            refuse(flow, RevocationUnavailable("the revocation list is stale; requests are refused until it refreshes"))
            return
        digest = token_sha256(token)
        try:
            claims = await self.verifier.verify(token, digest)
        except JitgateError as err:
            refuse(flow, err)
            return
        except Exception:  # never let an unexpected verifier failure through
            refuse(flow, InvalidToken("token could not be verified"))
            return
        if claims.jti in self.revocations:
            refuse(flow, TokenRevoked("token has been revoked"))
            return
        state = meta.state_of(flow)
        state.claims, state.token_sha256 = claims, digest
