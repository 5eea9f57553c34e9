"""The token contract between broker and gateway (DESIGN.md "The token").

A JIT token is a JWS, ES256 only, signed by a KMS key the broker publishes in its JWKS. This
module holds the claims model, the checks, the one verification function the gateway uses,
and the pure half of signing (the broker passes in a signer that returns KMS's DER signature).
Everything takes `now` as an argument; only callers read the clock.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jitgate.errors import InvalidToken, TokenExpired, TokenNotYetValid, UnknownKeyId

ALGORITHM = "ES256"
AUDIENCE = "jitgate"
# Seconds a gateway accepts a token past its `exp` (and before its `nbf`), for clock skew. No
# verifier may use more than MAX_LEEWAY: a revocation is kept until exp + MAX_LEEWAY, and a token
# accepted any later than that could no longer be refused as revoked.
DEFAULT_LEEWAY = 30
MAX_LEEWAY = DEFAULT_LEEWAY
MAX_TOKEN_BYTES = 16 * 1024
_P256_COORD_BYTES = 32


class Scope(BaseModel):
    """What a token may do on its connection."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    operations: tuple[str, ...] = ()
    collections: tuple[str, ...] = ()
    # Response fields a store token may see; None means every field.
    fields: tuple[str, ...] | None = None
    # Postgres columns masked whatever they hold (names as in `fields`); None: none.
    mask_columns: tuple[str, ...] | None = None
    methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    # A store token's tenant and database (Chroma); None: the store's defaults.
    tenant: str | None = None
    database: str | None = None


class Limits(BaseModel):
    """Per-token limits the gateway enforces; None means no limit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_requests: int | None = Field(default=None, ge=1)
    max_documents: int | None = Field(default=None, ge=1)
    max_bytes: int | None = Field(default=None, ge=1)


class Claims(BaseModel):
    """The claims of a JIT token, exactly as DESIGN.md lists them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    iss: str = Field(min_length=1)
    aud: str = Field(min_length=1)
    sub: str = Field(min_length=1)
    iat: int
    nbf: int
    exp: int
    jti: str = Field(min_length=8, max_length=128)
    conn: str = Field(min_length=1)
    scope: Scope
    limits: Limits
    mask: str = Field(min_length=1)
    job: str | None = None
    apv: str | None = None
    # The OIDC identity's groups, for Postgres row security (`jitgate.groups`); None when it has none.
    groups: tuple[str, ...] | None = None


def check_claims(
    raw: Mapping[str, Any],
    *,
    now: float,
    issuer: str,
    audience: str = AUDIENCE,
    leeway: int = DEFAULT_LEEWAY,
) -> Claims:
    """Validate a decoded claims mapping against the contract and `now`."""
    if not 0 <= leeway <= MAX_LEEWAY:
        raise ValueError(f"leeway must be between 0 and {MAX_LEEWAY} seconds")
    try:
        claims = Claims.model_validate(raw)
    except ValidationError:
        raise InvalidToken("token claims are malformed") from None
    if claims.iss != issuer:
        raise InvalidToken("token issuer is not trusted")
    if claims.aud != audience:
        raise InvalidToken("token audience is wrong")
    if claims.exp <= claims.nbf or claims.iat > claims.exp:
        raise InvalidToken("token validity window is malformed")
    if now >= claims.exp + leeway:
        raise TokenExpired("token has expired")
    if now + leeway < claims.nbf:
        raise TokenNotYetValid("token is not valid yet")
    return claims


def revocation_expires_at(exp: int) -> int:
    """When a revocation of the token expiring at `exp` may go: from then on no gateway accepts it.

    The broker writes it as the revocation's `expires_at`, and accepts a revoke while the token
    could still be accepted anywhere (`revocation_live(revocation_expires_at(exp), now=now)`).
    """
    return exp + MAX_LEEWAY


def revocation_live(expires_at: float, *, now: float) -> bool:
    """Whether a revocation that expires at `expires_at` must still be enforced at `now`.

    Every reader of revocation items filters with this (DynamoDB's TTL deletes late), and the
    broker's revoke uses it for its acceptance window: one rule for both sides.
    """
    return now < expires_at


class KeySet:
    """The broker's public keys by `kid`, ES256 (P-256) only; anything else is dropped."""

    def __init__(self, keys: Mapping[str, ec.EllipticCurvePublicKey]) -> None:
        self._keys = dict(keys)

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any]) -> KeySet:
        keys: dict[str, ec.EllipticCurvePublicKey] = {}
        entries = jwks.get("keys")
        if not isinstance(entries, list):
            raise ValueError("JWKS has no 'keys' list")
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            kid = entry.get("kid")
            if not isinstance(kid, str) or entry.get("kty") != "EC" or entry.get("crv") != "P-256":
                continue
            if entry.get("alg", ALGORITHM) != ALGORITHM or entry.get("use", "sig") != "sig":
                continue
            key = jwt.algorithms.ECAlgorithm.from_jwk(entry)
            if isinstance(key, ec.EllipticCurvePublicKey):
                keys[kid] = key
        return cls(keys)

    def get(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        return self._keys.get(kid)

    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def public_jwk(public_key: ec.EllipticCurvePublicKey, kid: str) -> dict[str, str]:
    """A P-256 public key as a JWK entry for the broker's JWKS."""
    if not isinstance(public_key.curve, ec.SECP256R1):
        raise ValueError("only P-256 keys are published")
    jwk: dict[str, str] = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public_key))
    jwk.update({"kid": kid, "alg": ALGORITHM, "use": "sig"})
    return jwk


def unverified_kid(token: str) -> str:
    """The token's `kid`, after the header checks that need no key (alg, size, form)."""
    if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
        raise InvalidToken("token is malformed")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidToken("token is malformed") from None
    # Only ES256, whatever the header claims; jku, x5u and embedded jwk are never followed.
    if header.get("alg") != ALGORITHM:
        raise InvalidToken("token algorithm is not accepted")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidToken("token has no key id")
    return kid


def verify_token(
    token: str,
    keys: KeySet,
    *,
    now: float,
    issuer: str,
    audience: str = AUDIENCE,
    leeway: int = DEFAULT_LEEWAY,
) -> Claims:
    """Verify a JIT token string against the broker's keys and `now`; return its claims.

    Raises UnknownKeyId when the `kid` is not in `keys` (the caller may refetch the JWKS once),
    TokenExpired / TokenNotYetValid for a good signature outside its window, and InvalidToken
    for everything else, without saying which check failed.
    """
    kid = unverified_kid(token)
    key = keys.get(kid)
    if key is None:
        raise UnknownKeyId("token key id is unknown")
    try:
        payload = jwt.api_jws.decode(token, key=key, algorithms=[ALGORITHM])
        raw = json.loads(payload)
    except (jwt.PyJWTError, ValueError):
        raise InvalidToken("token signature is invalid") from None
    if not isinstance(raw, dict):
        raise InvalidToken("token claims are malformed")
    return check_claims(raw, now=now, issuer=issuer, audience=audience, leeway=leeway)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def der_to_raw_signature(der: bytes) -> bytes:
    """KMS returns ECDSA signatures as DER; a JWS wants fixed-width big-endian r||s."""
    r, s = decode_dss_signature(der)
    return r.to_bytes(_P256_COORD_BYTES, "big") + s.to_bytes(_P256_COORD_BYTES, "big")


def encode_token(claims: Claims, *, kid: str, sign_der: Callable[[bytes], bytes]) -> str:
    """Serialise and sign `claims`; `sign_der` signs the message with ECDSA-SHA256 and returns DER."""
    header = {"alg": ALGORITHM, "typ": "JWT", "kid": kid}
    body = claims.model_dump(mode="json", exclude_none=True)
    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    )
    signature = der_to_raw_signature(sign_der(signing_input.encode("ascii")))
    return signing_input + "." + _b64url(signature)


def new_jti() -> str:
    return uuid.uuid4().hex
