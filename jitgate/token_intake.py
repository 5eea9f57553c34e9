"""Where a JIT token sits in a request, and what verifying it left behind.

A token comes as proxy credentials (`Proxy-Authorization: Basic base64(user:token)` or `Bearer`),
as `Authorization: Bearer`, or in place of the upstream API key in the key header of any
connection serving the host (several may share a host; only the verified token says whose).
`take_token` finds it and strips every copy; `VerifiedTokens` keeps verification results by the
token's SHA-256 (claims until `exp` plus leeway; lasting rejections), so the hot path does no
crypto. No mitmproxy here: headers are any mapping of names to values.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from typing import Protocol

from jitgate.errors import InvalidToken, KeysUnavailable, TokenExpired, TokenNotYetValid, UnknownKeyId
from jitgate.policy import Connection
from jitgate.token import DEFAULT_LEEWAY, Claims, KeySet, verify_token

logger = logging.getLogger(__name__)

_CACHE_MAX = 10_000


class MultiHeaders(Protocol):
    """Headers that may repeat a name (mitmproxy's `Headers`)."""

    def items(self, multi: bool = False) -> Iterable[tuple[str, str]]: ...

    def __contains__(self, key: object) -> bool: ...

    def __delitem__(self, key: str) -> None: ...


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


def take_token(headers: MutableMapping[str, str], conns: Sequence[Connection]) -> str | None:
    """Find the JIT token in a request's `headers` and strip every copy of it from them.

    `conns` are the connections serving the request's host: the token may sit in the key header
    of any of them (which one it is for, only the verified token says), so every one is checked
    and stripped. Precedence: proxy credentials, then `Authorization: Bearer`, then key headers.
    Other copies: `strip_copies` (headers); in the URL or the body they are leak_guard's (a JWT
    is a secret, and request secrets are never allowed through).
    """
    found: str | None = None
    if "Proxy-Authorization" in headers:
        found = proxy_token(headers["Proxy-Authorization"])
        del headers["Proxy-Authorization"]
    auth = headers.get("Authorization", "")
    if auth[:7].lower() == "bearer " and looks_like_token(auth[7:].strip()):
        found = found or auth[7:].strip()
        del headers["Authorization"]
    for conn in conns:
        header = conn.credential.header
        if header not in headers:
            continue
        inner = key_header_token(headers[header], conn.credential.format)
        if inner is not None:
            found = found or inner
            del headers[header]
    return found


def strip_copies(headers: MultiHeaders, token: str) -> None:
    """Remove every header whose value holds `token` (an SDK sending its key twice, a debug
    header): the token is never forwarded, whatever the masking profile."""
    copies = [name for name, value in headers.items(multi=True) if token in value]
    for name in copies:
        if name in headers:  # a name repeated: its values went with the first
            del headers[name]


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class VerifiedTokens:
    """Verification results by token SHA-256, bounded at `max_size` entries each."""

    def __init__(self, max_size: int = _CACHE_MAX) -> None:
        self.max_size = max_size
        self._verified: dict[str, Claims] = {}
        self._rejected: dict[str, tuple[type[InvalidToken], str]] = {}

    def lookup(self, digest: str, now: float) -> Claims | None:
        """The cached claims (None: not verified yet); raises the error a cached result means:
        TokenExpired past `exp` plus leeway, or the rejection remembered for this token."""
        claims = self._verified.get(digest)
        if claims is not None:
            if now >= claims.exp + DEFAULT_LEEWAY:
                self._verified.pop(digest, None)
                raise TokenExpired("token has expired")
            return claims
        rejected = self._rejected.get(digest)
        if rejected is not None:
            raise rejected[0](rejected[1])
        return None

    def accepted(self, digest: str, claims: Claims, now: float) -> None:
        if len(self._verified) >= self.max_size:
            self._verified = {d: c for d, c in self._verified.items() if now < c.exp + DEFAULT_LEEWAY}
            if len(self._verified) >= self.max_size:
                self._verified.clear()
        self._verified[digest] = claims

    def rejected(self, digest: str, err: InvalidToken) -> None:
        """A bad signature or claim stays bad: remember it so a flood of one bad token costs no
        crypto. An unknown kid may be published later, and a not-yet-valid token becomes valid."""
        if isinstance(err, UnknownKeyId | TokenNotYetValid):
            return
        if len(self._rejected) >= self.max_size:
            self._rejected.clear()
        self._rejected[digest] = (type(err), err.message)

    def clear(self) -> None:
        """Drop every result (other settings, or the broker's key set changed)."""
        self._verified, self._rejected = {}, {}


class TokenVerifier:
    """Verifies JIT tokens against the broker's signing keys, fetched from its JWKS URL by `fetch`.

    Verified and rejected tokens are cached by digest (`VerifiedTokens`); the key set is fetched
    again every `refresh_interval` seconds (`routine`, from the revocation thread) and for an
    unknown kid at most every `refetch_interval` seconds; when the key set changes, cached
    verifications are dropped (a withdrawn key verifies nothing more). No fetch yet, or the last
    one failed: a token with an unknown kid is KeysUnavailable (503), never let through.
    """

    def __init__(
        self, fetch: Callable[[str], KeySet], *, clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._monotonic = monotonic
        self.url = ""
        self.issuer = ""
        self.refetch_interval = 10.0
        self.refresh_interval = 300.0
        self.keys = KeySet({})
        self._fetched_at = float("-inf")
        self._ok = False
        self.results = VerifiedTokens()
        self._lock = asyncio.Lock()

    @property
    def keys_loaded(self) -> bool:
        """Whether the last fetch of the broker's keys succeeded."""
        return self._ok

    def keys_age(self) -> float:
        """Seconds since the keys were last fetched (infinite when never)."""
        return self._monotonic() - self._fetched_at

    def configure(self, url: str, issuer: str, *, refetch_interval: float, refresh_interval: float) -> None:
        self.url, self.issuer = url, issuer
        self.refetch_interval, self.refresh_interval = refetch_interval, refresh_interval
        self.results.clear()  # results under other settings do not carry over

    def routine(self) -> None:
        """Fetch the keys when the routine refresh is due (blocking)."""
        if self._monotonic() - self._fetched_at >= self.refresh_interval:
            self.refresh()

    def refresh(self) -> bool:
        """Fetch the JWKS (blocking); when the key set changed, cached verifications are dropped."""
        try:
            keys = self._fetch(self.url)
        except Exception as exc:
            logger.warning("jitgate: JWKS fetch failed (%s)", type(exc).__name__)
            self._ok = False
            return False
        finally:
            self._fetched_at = self._monotonic()
        if keys.kids() != self.keys.kids():
            self.results.clear()  # tokens of a withdrawn key must not live on in the cache
        self.keys = keys
        self._ok = True
        return True

    async def verify(self, token: str, digest: str) -> Claims:
        """The token's claims (`digest`: its token_sha256); InvalidToken or KeysUnavailable otherwise."""
        now = self._clock()
        claims = self.results.lookup(digest, now)
        if claims is not None:
            return claims
        try:
            try:
                claims = verify_token(token, self.keys, now=now, issuer=self.issuer)
            except UnknownKeyId:
                await self._refetch()
                claims = verify_token(token, self.keys, now=now, issuer=self.issuer)
        except InvalidToken as err:
            self.results.rejected(digest, err)
            raise
        self.results.accepted(digest, claims, now)
        return claims

    async def _refetch(self) -> None:
        async with self._lock:
            if self._monotonic() - self._fetched_at < self.refetch_interval:
                if not self._ok:
                    raise KeysUnavailable("the broker's signing keys cannot be fetched")
                return  # rate-limited: the kid stays unknown (InvalidToken)
            if not await asyncio.to_thread(self.refresh):
                raise KeysUnavailable("the broker's signing keys cannot be fetched")
