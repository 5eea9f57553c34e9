"""Sign JIT tokens with KMS and publish the public keys as a JWKS.

KMS signs with ECDSA_SHA_256 over the raw signing input (it hashes it itself) and returns a
DER signature; `jitgate.token.encode_token` turns that into the JWS's raw r||s. The JWKS lists
every configured key, so a new key can be published before it starts signing (rotation).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from jitgate.errors import SigningUnavailable
from jitgate.token import Claims, encode_token, public_jwk

KMS_MAX_RAW_MESSAGE = 4096
SIGNING_ALGORITHM = "ECDSA_SHA_256"


class KmsSigner:
    """Signs claims with one KMS key; the JWT header `kid` is the KMS key id."""

    def __init__(self, kms: Any, key_id: str) -> None:
        self._kms = kms
        self.key_id = key_id

    def _sign_der(self, message: bytes) -> bytes:
        if len(message) > KMS_MAX_RAW_MESSAGE:
            raise SigningUnavailable("the token is too large to sign")
        try:
            resp = self._kms.sign(
                KeyId=self.key_id, Message=message, MessageType="RAW", SigningAlgorithm=SIGNING_ALGORITHM
            )
        except (ClientError, BotoCoreError):
            raise SigningUnavailable("the signing key cannot be used right now") from None
        signature: bytes = resp["Signature"]
        return signature

    def sign(self, claims: Claims) -> str:
        return encode_token(claims, kid=self.key_id, sign_der=self._sign_der)


class KmsJwks:
    """The JWKS of the configured KMS keys, from GetPublicKey, cached for `ttl` seconds."""

    def __init__(
        self,
        kms: Any,
        key_ids: Sequence[str],
        *,
        ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kms = kms
        self._key_ids = tuple(key_ids)
        self._ttl = ttl
        self._clock = clock
        self._cached: dict[str, Any] | None = None
        self._at = 0.0

    def _jwk(self, key_id: str) -> dict[str, str]:
        resp = self._kms.get_public_key(KeyId=key_id)
        spec = resp.get("KeySpec") or resp.get("CustomerMasterKeySpec")  # moto sends only the older name
        if spec != "ECC_NIST_P256" or SIGNING_ALGORITHM not in resp.get("SigningAlgorithms", []):
            raise SigningUnavailable("a configured signing key is not an ECC_NIST_P256 signing key")
        key = load_der_public_key(resp["PublicKey"])
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise SigningUnavailable("a configured signing key is not an EC key")
        return public_jwk(key, key_id)

    def jwks(self) -> dict[str, Any]:
        now = self._clock()
        if self._cached is None or now - self._at >= self._ttl:
            try:
                self._cached = {"keys": [self._jwk(k) for k in self._key_ids]}
            except (ClientError, BotoCoreError):
                if self._cached is None:
                    raise SigningUnavailable("the signing keys cannot be read right now") from None
                return self._cached  # public keys a moment old beat no answer
            self._at = now
        return self._cached
