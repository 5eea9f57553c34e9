"""Verify a caller's OIDC identity token against the issuers the policy trusts.

Keys come from each issuer's JWKS (its discovery document's `jwks_uri`, or the one the policy
configures), fetched with pyjwt's `PyJWKClient` and cached. Only RS256 and ES256 are accepted,
each only with a key of its own type; `jku`, `x5u` and embedded `jwk` headers are never
followed. The claim checks take `now` so tests and the handler share one clock. Every failure
says only "invalid identity token", whatever the cause, so a caller learns nothing.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from jitgate.errors import InvalidToken, IssuerUnavailable
from jitgate.policy import Identity, Issuer

LEEWAY = 30
MAX_TOKEN_BYTES = 16 * 1024
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub")
_KEY_TYPES: dict[str, type] = {"RS256": rsa.RSAPublicKey, "ES256": ec.EllipticCurvePublicKey}
_LOOPBACK_NAMES = {"localhost"}


def _invalid() -> InvalidToken:
    return InvalidToken("identity token is invalid")


def check_fetch_url(url: str) -> str:
    """Only https, or http to a loopback address (the local dev issuer)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname:
        host = parts.hostname
        if host in _LOOPBACK_NAMES:
            return url
        try:
            if ipaddress.ip_address(host).is_loopback:
                return url
        except ValueError:
            pass
    raise ValueError(f"refusing to fetch keys from {url!r}: https only (http on loopback)")


def _get_json(url: str, timeout: float) -> Any:
    req = urllib.request.Request(check_fetch_url(url), headers={"Accept": "application/json"})  # noqa: S310
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - scheme checked above
        return json.loads(resp.read(1024 * 1024))


class IssuerKeys:
    """One trusted issuer's signing keys: discovery once, JWKS cached, refetch on an unknown kid (rate-limited)."""

    def __init__(
        self,
        issuer: Issuer,
        *,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 3.0,
        lifespan: float = 300.0,
        min_refresh_interval: float = 30.0,
        max_stale: float = 3600.0,
    ) -> None:
        self.issuer = issuer
        self._max_stale = max_stale
        self._ok_at: float | None = None
        self._clock = clock
        self._timeout = timeout
        self._lifespan = lifespan
        self._min_refresh = min_refresh_interval
        self._client: jwt.PyJWKClient | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def _jwks_uri(self) -> str:
        if self.issuer.jwks_uri:
            return check_fetch_url(self.issuer.jwks_uri)
        doc = _get_json(self.issuer.issuer.rstrip("/") + "/.well-known/openid-configuration", self._timeout)
        if not isinstance(doc, dict) or doc.get("issuer") != self.issuer.issuer:
            raise ValueError("discovery document names another issuer")
        uri = doc.get("jwks_uri")
        if not isinstance(uri, str):
            raise ValueError("discovery document has no jwks_uri")
        return check_fetch_url(uri)

    def _refresh(self) -> None:
        self._fetched_at = self._clock()
        try:
            if self._client is None:
                self._client = jwt.PyJWKClient(
                    self._jwks_uri(), cache_keys=False, cache_jwk_set=False, timeout=int(self._timeout) or 1
                )
            keys = self._client.get_signing_keys()
        except (jwt.PyJWTError, ValueError, OSError):
            # Keep serving the keys we have for a while (they are public and were valid), but
            # not forever: a key the issuer withdrew must stop working.
            if self._ok_at is None or self._fetched_at - self._ok_at > self._max_stale:
                self._keys = {}
                raise IssuerUnavailable("the identity token's issuer keys cannot be fetched") from None
            return
        self._keys = {k.key_id: k for k in keys if k.key_id}
        self._ok_at = self._fetched_at

    def key(self, kid: str) -> jwt.PyJWK:
        with self._lock:
            now = self._clock()
            stale = self._fetched_at is None or now - self._fetched_at >= self._lifespan
            may_refetch = self._fetched_at is not None and now - self._fetched_at >= self._min_refresh
            if stale or not self._keys or (kid not in self._keys and may_refetch):
                self._refresh()
            found = self._keys.get(kid)
        if found is None:
            raise _invalid()
        return found


class OidcVerifier:
    """Verifies identity tokens from the policy's issuers and returns the Identity they prove."""

    def __init__(
        self,
        issuers: Sequence[Issuer],
        *,
        leeway: int = LEEWAY,
        keys_factory: Callable[[Issuer], IssuerKeys] = IssuerKeys,
    ) -> None:
        self._issuers = {i.issuer: keys_factory(i) for i in issuers}
        self._leeway = leeway

    def verify(self, token: str, *, now: float) -> Identity:
        if not token or len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
            raise _invalid()
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _invalid() from None
        iss = unverified.get("iss")
        keys = self._issuers.get(iss) if isinstance(iss, str) else None
        if keys is None:
            raise _invalid()
        issuer = keys.issuer
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in issuer.algorithms or alg not in _KEY_TYPES or not isinstance(kid, str) or not kid:
            raise _invalid()
        key = keys.key(kid).key
        if not isinstance(key, _KEY_TYPES[alg]):
            raise _invalid()
        if isinstance(key, ec.EllipticCurvePublicKey) and not isinstance(key.curve, ec.SECP256R1):
            raise _invalid()
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise _invalid()
        try:
            payload = jwt.api_jws.decode(token, key=key, algorithms=[alg])
            claims = json.loads(payload)
        except (jwt.PyJWTError, ValueError):
            raise _invalid() from None
        if not isinstance(claims, dict):
            raise _invalid()
        self._check(claims, issuer, now)
        return Identity(issuer=issuer.issuer, subject=claims["sub"], claims=claims)

    def _check(self, claims: Mapping[str, Any], issuer: Issuer, now: float) -> None:
        if any(c not in claims for c in REQUIRED_CLAIMS):
            raise _invalid()
        iss, sub, aud = claims["iss"], claims["sub"], claims["aud"]
        if not isinstance(iss, str) or not hmac.compare_digest(iss.encode(), issuer.issuer.encode()):
            raise _invalid()
        if not isinstance(sub, str) or not sub:
            raise _invalid()
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if issuer.audience not in [a for a in audiences if isinstance(a, str)]:
            raise _invalid()
        times = {}
        for name in ("exp", "iat", "nbf"):
            value = claims.get(name)
            if value is None and name == "nbf":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _invalid()
            times[name] = float(value)
        if now >= times["exp"] + self._leeway:
            raise _invalid()
        if now + self._leeway < times.get("nbf", times["iat"]) or now + self._leeway < times["iat"]:
            raise _invalid()
