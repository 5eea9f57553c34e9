from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from jitgate.errors import InvalidToken, TokenExpired, TokenNotYetValid, UnknownKeyId
from jitgate.token import (
    AUDIENCE,
    DEFAULT_LEEWAY,
    MAX_LEEWAY,
    Claims,
    KeySet,
    Limits,
    Scope,
    check_claims,
    der_to_raw_signature,
    encode_token,
    new_jti,
    public_jwk,
    revocation_expires_at,
    revocation_live,
    verify_token,
)

ISS = "https://broker.test"
NOW = 1_800_000_000


def _claims(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISS,
        "aud": AUDIENCE,
        "sub": "repo:acme/search:ref:refs/heads/main",
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 600,
        "jti": new_jti(),
        "conn": "cohere-prod",
        "scope": {"operations": ["rerank"]},
        "limits": {"max_requests": 10},
        "mask": "default",
    }
    base.update(over)
    return base


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def keys(key: ec.EllipticCurvePrivateKey) -> KeySet:
    return KeySet.from_jwks({"keys": [public_jwk(key.public_key(), "k1")]})


def _sign(key: ec.EllipticCurvePrivateKey, claims: dict[str, Any], kid: str = "k1") -> str:
    def signer(msg: bytes) -> bytes:
        return key.sign(msg, ec.ECDSA(hashes.SHA256()))

    return encode_token(Claims.model_validate(claims), kid=kid, sign_der=signer)


def test_round_trip_with_der_signer(key: ec.EllipticCurvePrivateKey, keys: KeySet) -> None:
    raw = _claims(job="nightly", limits={"max_requests": 5, "max_documents": 100})
    token = _sign(key, raw)
    claims = verify_token(token, keys, now=NOW + 1, issuer=ISS)
    assert claims.sub == raw["sub"]
    assert claims.limits == Limits(max_requests=5, max_documents=100)
    assert claims.scope == Scope(operations=("rerank",))
    assert claims.job == "nightly"
    # pyjwt, an independent implementation, accepts the raw r||s signature we produced.
    decoded = jwt.decode(token, key.public_key(), algorithms=["ES256"], audience=AUDIENCE,
                         options={"verify_exp": False, "verify_nbf": False, "verify_iat": False})
    assert decoded["jti"] == raw["jti"]


def test_der_to_raw_is_fixed_width(key: ec.EllipticCurvePrivateKey) -> None:
    for _ in range(20):
        raw = der_to_raw_signature(key.sign(b"x", ec.ECDSA(hashes.SHA256())))
        assert len(raw) == 64


@pytest.mark.parametrize(
    ("over", "now", "error"),
    [
        ({"iat": NOW - 700, "nbf": NOW - 700, "exp": NOW - 100}, NOW, TokenExpired),
        ({"nbf": NOW + 1000, "exp": NOW + 2000}, NOW, TokenNotYetValid),
        ({"iss": "https://evil.test"}, NOW, InvalidToken),
        ({"aud": "other"}, NOW, InvalidToken),
        ({"exp": NOW, "nbf": NOW}, NOW - 100, InvalidToken),
        ({"unexpected": 1}, NOW, InvalidToken),
        ({"scope": "rerank"}, NOW, InvalidToken),
        ({"jti": "short"}, NOW, InvalidToken),
        ({"limits": {"max_requests": 0}}, NOW, InvalidToken),
    ],
)
def test_check_claims_refuses(over: dict[str, Any], now: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        check_claims(_claims(**over), now=now, issuer=ISS)


def test_check_claims_leeway() -> None:
    raw = _claims(exp=NOW + 10)
    assert check_claims(raw, now=NOW + 20, issuer=ISS, leeway=30).exp == NOW + 10
    with pytest.raises(TokenExpired):
        check_claims(raw, now=NOW + 20, issuer=ISS, leeway=5)


@pytest.mark.parametrize("leeway", [-1, MAX_LEEWAY + 1, 3600])
def test_no_verifier_may_use_more_than_the_largest_leeway(leeway: int) -> None:
    """A revocation is kept until exp + MAX_LEEWAY; a longer leeway would outlive it."""
    with pytest.raises(ValueError, match="leeway"):
        check_claims(_claims(), now=NOW, issuer=ISS, leeway=leeway)


@pytest.mark.parametrize("past_exp", [-5, 0, 1, DEFAULT_LEEWAY - 1, MAX_LEEWAY - 1])
def test_a_revocation_is_live_whenever_the_token_is_still_accepted(past_exp: int) -> None:
    raw = _claims(exp=NOW + 10)
    now = NOW + 10 + past_exp
    check_claims(raw, now=now, issuer=ISS)  # accepted at `now`, by the default leeway ...
    assert revocation_live(revocation_expires_at(NOW + 10), now=now)  # ... so a revocation still holds


def test_a_revocation_ends_when_no_leeway_accepts_the_token() -> None:
    raw = _claims(exp=NOW + 10)
    end = revocation_expires_at(NOW + 10)
    assert not revocation_live(end, now=end)
    with pytest.raises(TokenExpired):
        check_claims(raw, now=end, issuer=ISS, leeway=MAX_LEEWAY)


def _b64(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_attacks_are_refused(key: ec.EllipticCurvePrivateKey, keys: KeySet) -> None:
    body = _claims()
    good = _sign(key, body)
    h, p, s = good.split(".")
    attacks = {
        "alg none": f"{_b64({'alg': 'none', 'kid': 'k1'})}.{p}.",
        "hs256 with public key": jwt.encode(body, "k" * 32, algorithm="HS256", headers={"kid": "k1"}),
        "tampered payload": f"{h}.{_b64({**body, 'sub': 'admin'})}.{s}",
        "no kid": f"{_b64({'alg': 'ES256'})}.{p}.{s}",
        "garbage": "a.b.c",
        "two parts": f"{h}.{p}",
        "huge": "a" * 70_000,
    }
    for name, token in attacks.items():
        with pytest.raises(InvalidToken):
            verify_token(token, keys, now=NOW, issuer=ISS)
        assert name


def test_unknown_kid_and_foreign_key(key: ec.EllipticCurvePrivateKey, keys: KeySet) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(UnknownKeyId):
        verify_token(_sign(key, _claims(), kid="k2"), keys, now=NOW, issuer=ISS)
    with pytest.raises(InvalidToken) as info:
        verify_token(_sign(other, _claims(), kid="k1"), keys, now=NOW, issuer=ISS)
    assert not isinstance(info.value, UnknownKeyId)


def test_embedded_jwk_header_is_ignored(key: ec.EllipticCurvePrivateKey, keys: KeySet) -> None:
    attacker = ec.generate_private_key(ec.SECP256R1())
    headers = {"kid": "k1", "jwk": public_jwk(attacker.public_key(), "k1"), "jku": "http://127.0.0.1:9/jwks"}
    token = jwt.encode(_claims(), attacker, algorithm="ES256", headers=headers)
    with pytest.raises(InvalidToken):
        verify_token(token, keys, now=NOW, issuer=ISS)


def test_keyset_keeps_only_p256_es256() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key))
    p384_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(p384))
    ks = KeySet.from_jwks({"keys": [public_jwk(ec_key, "a"), {**rsa_jwk, "kid": "b"}, {**p384_jwk, "kid": "c"}]})
    assert ks.kids() == frozenset({"a"})
    with pytest.raises(ValueError):
        KeySet.from_jwks({"nokeys": []})


def test_real_clock_smoke(key: ec.EllipticCurvePrivateKey, keys: KeySet) -> None:
    now = int(time.time())
    token = _sign(key, _claims(iat=now, nbf=now, exp=now + 60))
    assert verify_token(token, keys, now=time.time(), issuer=ISS).exp == now + 60
