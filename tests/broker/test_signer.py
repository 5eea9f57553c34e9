"""KMS signing and the JWKS, with moto's mock_aws: DER → r||s, rotation, caching, fail closed."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from broker.signer import KMS_MAX_RAW_MESSAGE, KmsJwks, KmsSigner
from jitgate.errors import SigningUnavailable
from jitgate.token import AUDIENCE, Claims, KeySet, Limits, Scope, new_jti, verify_token
from tests.broker.conftest import Clock

NOW = 1_800_000_000


def _claims(**over: Any) -> Claims:
    base: dict[str, Any] = {
        "iss": "https://broker.test", "aud": AUDIENCE, "sub": "s", "iat": NOW, "nbf": NOW, "exp": NOW + 60,
        "jti": new_jti(), "conn": "c", "scope": Scope(operations=("rerank",)), "limits": Limits(), "mask": "default",
    }
    return Claims(**{**base, **over})


@pytest.fixture
def kms(aws: None) -> Any:
    return boto3.client("kms", region_name="us-east-1")


def _key(kms: Any, spec: str = "ECC_NIST_P256") -> str:
    key_id: str = kms.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    return key_id


def test_tokens_signed_by_kms_verify_against_the_published_keys(kms: Any) -> None:
    old, new = _key(kms), _key(kms)
    jwks = KmsJwks(kms, [new, old]).jwks()
    assert [k["kid"] for k in jwks["keys"]] == [new, old]
    keys = KeySet.from_jwks(jwks)
    for key_id in (new, old):  # both the signing key and the retired one verify
        for _ in range(10):  # DER signatures vary in length; r||s must always be 64 bytes
            token = KmsSigner(kms, key_id).sign(_claims())
            assert verify_token(token, keys, now=NOW, issuer="https://broker.test").sub == "s"


class _Counting:
    """A KMS client that counts GetPublicKey calls and can be made to fail."""

    def __init__(self, kms: Any) -> None:
        self.kms, self.calls, self.fail = kms, 0, False

    def get_public_key(self, **kw: Any) -> Any:
        self.calls += 1
        if self.fail:
            from botocore.exceptions import EndpointConnectionError

            raise EndpointConnectionError(endpoint_url="https://kms.invalid")
        return self.kms.get_public_key(**kw)


def test_jwks_is_cached_until_its_ttl_and_survives_a_failed_refresh(kms: Any) -> None:
    counting, mono = _Counting(kms), Clock(0.0)
    jwks = KmsJwks(counting, [_key(kms)], ttl=300, clock=mono)
    first = jwks.jwks()
    mono.now += 299
    assert jwks.jwks() is first and counting.calls == 1
    mono.now += 2
    counting.fail = True
    assert jwks.jwks() == first and counting.calls == 2  # refreshed, failed, kept the last good keys
    counting.fail = False
    mono.now += 301
    assert jwks.jwks() == first and counting.calls == 3


def test_jwks_with_kms_down_at_start_is_unavailable(kms: Any) -> None:
    counting = _Counting(kms)
    counting.fail = True
    with pytest.raises(SigningUnavailable):
        KmsJwks(counting, [_key(kms)]).jwks()


def test_jwks_refuses_keys_that_are_not_p256(kms: Any) -> None:
    with pytest.raises(SigningUnavailable):
        KmsJwks(kms, [_key(kms, "ECC_NIST_P384")]).jwks()


def test_jwks_without_any_readable_key_is_unavailable(kms: Any) -> None:
    with pytest.raises(SigningUnavailable):
        KmsJwks(kms, ["0b0b0b0b-0000-4000-8000-000000000000"]).jwks()


def test_oversized_tokens_are_not_sent_to_kms(kms: Any) -> None:
    big = _claims(job="j" * KMS_MAX_RAW_MESSAGE)
    with pytest.raises(SigningUnavailable):
        KmsSigner(kms, _key(kms)).sign(big)


def test_unknown_key_fails_closed(kms: Any) -> None:
    with pytest.raises(SigningUnavailable) as err:
        KmsSigner(kms, "0b0b0b0b-0000-4000-8000-000000000000").sign(_claims())
    assert "0b0b0b0b" not in err.value.message
