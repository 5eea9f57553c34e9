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

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
from mitmproxy import connection, ctx, http
from mitmproxy.addonmanager import Loader

from addon import meta, settings
from addon.respond import refuse
from addon.revocations import RevocationList
from jitgate.errors import (
    InvalidToken,
    JitgateError,
    KeysUnavailable,
    RevocationUnavailable,
    TokenRequired,
    TokenRevoked,
    UnknownKeyId,
)
from jitgate.policy import Policy
from jitgate.token import Claims, KeySet, verify_token
from jitgate.token_intake import VerifiedTokens, proxy_token, strip_copies, take_token, token_sha256

logger = logging.getLogger(__name__)

JWKS_PATH = "/.well-known/jwks.json"
PROXY_AUTHENTICATE = 'Basic realm="jitgate"'


def fetch_jwks(url: str) -> KeySet:
    """The broker's JWKS (blocking; called from a worker thread)."""
    resp = httpx.get(url, timeout=3.0, follow_redirects=False)
    resp.raise_for_status()
    return KeySet.from_jwks(resp.json())


class TokenGate:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        jwks_fetcher: Callable[[str], KeySet] = fetch_jwks,
        dynamodb: Any = None,
        aws: settings.AwsClients | None = None,
    ) -> None:
        self._aws = aws or settings.AwsClients()
        self._clock = clock
        self._monotonic = monotonic
        self._jwks_fetcher = jwks_fetcher
        self._given_dynamodb = dynamodb is not None
        self.revocations = RevocationList(clock=clock, monotonic=monotonic)
        self.revocations.dynamodb = dynamodb
        self.policy: Policy | None = None
        self.jwks_url = ""
        self.issuer = ""
        self.refetch_interval = 10.0
        self.jwks_refresh = 300.0
        self.keys = KeySet({})
        self._keys_fetched_at = float("-inf")
        self._keys_ok = False
        self._results = VerifiedTokens()
        self._bound: dict[str, str] = {}
        self._jwks_lock = asyncio.Lock()

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
        self.policy, self.jwks_url, self.issuer = s.policy, s.jwks_url, s.issuer
        self.jwks_refresh, self.refetch_interval = s.jwks_refresh, s.jwks_refetch_interval
        self.revocations.table = s.table
        self.revocations.interval, self.revocations.staleness = s.revocation_refresh, s.revocation_staleness
        self._results.clear()  # results under other settings do not carry over
        if not self._given_dynamodb:
            self.revocations.dynamodb = self._aws.client("dynamodb", ctx.options)

    def running(self) -> None:
        # One synchronous round at start so the first requests are not refused as stale.
        self.refresh_keys()
        self.revocations.refresh()
        self.revocations.start(tick=self._routine_keys)

    def done(self) -> None:
        self.revocations.stop()

    # -- signing keys -----------------------------------------------------------------------

    def _routine_keys(self) -> None:
        if self._monotonic() - self._keys_fetched_at >= self.jwks_refresh:
            self.refresh_keys()

    def refresh_keys(self) -> bool:
        """Fetch the JWKS; when the broker's key set changed, cached verifications are dropped."""
        try:
            keys = self._jwks_fetcher(self.jwks_url)
        except Exception as exc:
            logger.warning("jitgate: JWKS fetch failed (%s)", type(exc).__name__)
            self._keys_ok = False
            return False
        finally:
            self._keys_fetched_at = self._monotonic()
        if keys.kids() != self.keys.kids():
            self._results.clear()  # tokens of a withdrawn key must not live on in the cache
        self.keys = keys
        self._keys_ok = True
        return True

    # -- verification -----------------------------------------------------------------------

    async def verify(self, token: str, digest: str) -> Claims:
        now = self._clock()
        claims = self._results.lookup(digest, now)
        if claims is not None:
            return claims
        try:
            try:
                claims = verify_token(token, self.keys, now=now, issuer=self.issuer)
            except UnknownKeyId:
                await self._refetch_keys()
                claims = verify_token(token, self.keys, now=now, issuer=self.issuer)
        except InvalidToken as err:
            self._results.rejected(digest, err)
            raise
        self._results.accepted(digest, claims, now)
        return claims

    async def _refetch_keys(self) -> None:
        async with self._jwks_lock:
            if self._monotonic() - self._keys_fetched_at < self.refetch_interval:
                if not self._keys_ok:
                    raise KeysUnavailable("the broker's signing keys cannot be fetched")
                return  # rate-limited: the kid stays unknown (InvalidToken)
            if not await asyncio.to_thread(self.refresh_keys):
                raise KeysUnavailable("the broker's signing keys cannot be fetched")

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
            claims = await self.verify(token, digest)
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
