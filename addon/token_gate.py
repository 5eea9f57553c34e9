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
import base64
import binascii
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from mitmproxy import connection, ctx, http
from mitmproxy.addonmanager import Loader

from addon import meta, settings
from addon.respond import refuse
from addon.revocations import RevocationList
from jitgate import durations
from jitgate.errors import (
    InvalidToken,
    JitgateError,
    KeysUnavailable,
    RevocationUnavailable,
    TokenExpired,
    TokenNotYetValid,
    TokenRequired,
    TokenRevoked,
    UnknownKeyId,
)
from jitgate.policy import Connection, Policy
from jitgate.token import DEFAULT_LEEWAY, Claims, KeySet, verify_token

logger = logging.getLogger(__name__)

JWKS_PATH = "/.well-known/jwks.json"
PROXY_AUTHENTICATE = 'Basic realm="jitgate"'
_CACHE_MAX = 10_000
_OWN = frozenset(
    {
        "jitgate_jwks_url",
        "jitgate_issuer",
        "jitgate_revocation_refresh",
        "jitgate_revocation_staleness",
        "jitgate_jwks_refetch_interval",
        "jitgate_jwks_refresh",
    }
)


def looks_like_token(value: str) -> bool:
    """A compact JWS with a JSON header: the only shape a JIT token has."""
    return value.startswith("eyJ") and value.count(".") == 2


def proxy_token(header: str) -> str | None:
    """The token in a `Proxy-Authorization` value: `Basic base64(user:token)` or `Bearer token`."""
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, sep, password = decoded.partition(":")
    return password if sep and password else None


def key_header_token(value: str, fmt: str) -> str | None:
    """The token inside a key header written in the connection's `format` (e.g. `Bearer {secret}`)."""
    prefix, _, suffix = fmt.partition("{secret}")
    if not value.startswith(prefix) or not value.endswith(suffix) or len(value) < len(prefix) + len(suffix):
        return None
    inner = value[len(prefix) : len(value) - len(suffix)].strip()
    return inner if looks_like_token(inner) else None


def take_token(request: http.Request, conns: Sequence[Connection]) -> str | None:
    """Find the JIT token in `request` and strip every copy of it from the headers.

    `conns` are the connections serving the request's host: the token may sit in the key header
    of any of them (which one it is for, only the verified token says), so every one is checked
    and stripped. Precedence: proxy credentials, then `Authorization: Bearer`, then key headers.
    Other copies: `strip_copies` (headers); in the URL or the body they are leak_guard's (a JWT
    is a secret, and request secrets are never allowed through).
    """
    found: str | None = None
    if "Proxy-Authorization" in request.headers:
        found = proxy_token(request.headers["Proxy-Authorization"])
        del request.headers["Proxy-Authorization"]
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer " and looks_like_token(auth[7:].strip()):
        found = found or auth[7:].strip()
        del request.headers["Authorization"]
    for conn in conns:
        header = conn.credential.header
        if header not in request.headers:
            continue
        inner = key_header_token(request.headers[header], conn.credential.format)
        if inner is not None:
            found = found or inner
            del request.headers[header]
    return found


def strip_copies(request: http.Request, token: str) -> None:
    """Remove every header whose value holds `token` (an SDK sending its key twice, a debug
    header): the token is never forwarded, whatever the masking profile."""
    copies = [name for name, value in request.headers.items(multi=True) if token in value]  # type: ignore[no-untyped-call]
    for name in copies:
        request.headers.pop(name, None)


def fetch_jwks(url: str) -> KeySet:
    """The broker's JWKS (blocking; called from a worker thread)."""
    resp = httpx.get(url, timeout=3.0, follow_redirects=False)
    resp.raise_for_status()
    return KeySet.from_jwks(resp.json())


def _seconds(value: str, name: str, *, zero_ok: bool = False) -> float:
    """Seconds from an option string (`jitgate.durations`); a bad one stops the start."""
    try:
        return durations.parse_seconds(value, zero_ok=zero_ok)
    except ValueError as exc:
        raise settings.options_error(f"{name}: {exc}") from None


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenGate:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        jwks_fetcher: Callable[[str], KeySet] = fetch_jwks,
        dynamodb: Any = None,
    ) -> None:
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
        self._verified: dict[str, Claims] = {}
        self._rejected: dict[str, tuple[type[InvalidToken], str]] = {}
        self._bound: dict[str, str] = {}
        self._jwks_lock = asyncio.Lock()

    # -- configuration ----------------------------------------------------------------------

    def load(self, loader: Loader) -> None:
        settings.add_options(
            loader,
            *settings.SHARED,
            "jitgate_jwks_url",
            "jitgate_issuer",
            "jitgate_revocation_refresh",
            "jitgate_revocation_staleness",
            "jitgate_jwks_refetch_interval",
            "jitgate_jwks_refresh",
        )

    def configure(self, updated: set[str]) -> None:
        if "onboarding" in updated and "onboarding" in ctx.options and ctx.options.onboarding:
            # mitmproxy's onboarding app (http://mitm.it through the proxy) answers before the chain
            # runs: its page and the CA download to anyone, with no token. Nothing is answered
            # without a token here, so it is switched off, whatever the command line said.
            ctx.options.update(onboarding=False)  # type: ignore[no-untyped-call]
            logger.info("jitgate: mitmproxy's onboarding app is off (it answers without a token)")
        if not (updated & (_OWN | settings.SHARED)):
            return
        opts = ctx.options
        self.policy = settings.policy_from(opts.jitgate_policy)
        url = opts.jitgate_jwks_url
        if not url.startswith(("https://", "http://")):
            raise settings.options_error("jitgate_jwks_url must be the broker's http(s) JWKS URL")
        self.jwks_url = url
        self.issuer = opts.jitgate_issuer or (url.removesuffix(JWKS_PATH) if url.endswith(JWKS_PATH) else "")
        if not self.issuer:
            raise settings.options_error("jitgate_issuer is required when the JWKS URL does not end in " + JWKS_PATH)
        if not opts.jitgate_table:
            raise settings.options_error("jitgate_table is required: revocations are read from it")
        refresh = _seconds(opts.jitgate_revocation_refresh, "jitgate_revocation_refresh")
        staleness = _seconds(opts.jitgate_revocation_staleness, "jitgate_revocation_staleness")
        refetch = _seconds(opts.jitgate_jwks_refetch_interval, "jitgate_jwks_refetch_interval", zero_ok=True)
        self.jwks_refresh = _seconds(opts.jitgate_jwks_refresh, "jitgate_jwks_refresh")
        if staleness <= refresh:
            raise settings.options_error("jitgate_revocation_staleness must be longer than jitgate_revocation_refresh")
        self.revocations.table = opts.jitgate_table
        self.revocations.interval, self.revocations.staleness = refresh, staleness
        self.refetch_interval = refetch
        self._verified, self._rejected = {}, {}  # results under other settings do not carry over
        if not self._given_dynamodb:
            self.revocations.dynamodb = settings.aws_client(
                "dynamodb", endpoint=opts.jitgate_aws_endpoint, region_name=opts.jitgate_aws_region
            )

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
            self._verified = {}  # tokens of a withdrawn key must not live on in the cache
            self._rejected = {}
        self.keys = keys
        self._keys_ok = True
        return True

    # -- verification -----------------------------------------------------------------------

    async def verify(self, token: str, digest: str) -> Claims:
        now = self._clock()
        claims = self._verified.get(digest)
        if claims is not None:
            if now >= claims.exp + DEFAULT_LEEWAY:
                self._verified.pop(digest, None)
                raise TokenExpired("token has expired")
            return claims
        rejected = self._rejected.get(digest)
        if rejected is not None:
            raise rejected[0](rejected[1])
        try:
            try:
                claims = verify_token(token, self.keys, now=now, issuer=self.issuer)
            except UnknownKeyId:
                await self._refetch_keys()
                claims = verify_token(token, self.keys, now=now, issuer=self.issuer)
        except InvalidToken as err:
            # A bad signature or claim stays bad: remember it so a flood of one bad token costs no crypto.
            # An unknown kid may be published later, and a not-yet-valid token becomes valid.
            if not isinstance(err, UnknownKeyId | TokenNotYetValid):
                if len(self._rejected) >= _CACHE_MAX:
                    self._rejected.clear()
                self._rejected[digest] = (type(err), err.message)
            raise
        if len(self._verified) >= _CACHE_MAX:
            self._verified = {d: c for d, c in self._verified.items() if now < c.exp + DEFAULT_LEEWAY}
            if len(self._verified) >= _CACHE_MAX:
                self._verified.clear()
        self._verified[digest] = claims
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
        token = take_token(flow.request, conns) or self._bound.get(flow.client_conn.id)
        if token is None:
            refuse(
                flow,
                TokenRequired("a JIT token is required: send it as proxy credentials or as the API key"),
                headers={"Proxy-Authenticate": PROXY_AUTHENTICATE},
            )
            return
        strip_copies(flow.request, token)
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
        meta.set_claims(flow, claims)
        flow.metadata[meta.TOKEN_HASH] = digest
