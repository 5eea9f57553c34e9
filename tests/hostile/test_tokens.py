"""Token attacks against the real gateway (mitmdump + every addon): each is refused with its JSON
code, nothing reaches the upstream, and no presented token appears in any session record."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.hashes import SHA256

from jitgate.devstack.policy import CI_CLAIMS
from jitgate.token import public_jwk
from tests.hostile.conftest import Hostile
from tests.reliability.harness import (
    CI_SUB,
    claims_for,
    client,
    kms_token,
    raw_record_bytes,
    rerank,
    sign_with,
    wait_for,
)

PRESENTED: list[str] = []  # every hostile token sent, checked against the records at the end


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _foreign_signer() -> tuple[ec.EllipticCurvePrivateKey, Callable[[bytes], bytes]]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, lambda msg: key.sign(msg, ec.ECDSA(SHA256()))


def _broker_public_pem(h: Hostile) -> bytes:
    jwks = httpx.get(f"{h.broker}/.well-known/jwks.json", timeout=10).json()
    entry = next(k for k in jwks["keys"] if k["kid"] == h.stack.key_id)
    from jwt.algorithms import ECAlgorithm

    pub = ECAlgorithm.from_jwk(json.dumps(entry))
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _attack(h: Hostile, case: str) -> str:
    kid = h.stack.key_id
    base = claims_for(h.broker)
    if case == "alg-none":
        head = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
        return f"{head}.{_b64(json.dumps(base).encode())}."
    if case == "hs256-with-public-key":
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
        signing_input = head + "." + _b64(json.dumps(base).encode())
        mac = hmac.new(_broker_public_pem(h), signing_input.encode(), hashlib.sha256).digest()
        return signing_input + "." + _b64(mac)
    if case == "expired":
        now = int(time.time())
        return kms_token(h.stack, h.moto, h.broker, iat=now - 3600, nbf=now - 3600, exp=now - 300)
    if case == "nbf-future":
        now = int(time.time())
        return kms_token(h.stack, h.moto, h.broker, nbf=now + 3600, exp=now + 4000)
    if case == "wrong-aud":
        return kms_token(h.stack, h.moto, h.broker, aud="someone-else")
    if case == "wrong-iss":
        return kms_token(h.stack, h.moto, h.broker, iss="https://evil.example")
    if case == "unknown-kid":
        _, sign = _foreign_signer()
        return sign_with(sign, {"alg": "ES256", "typ": "JWT", "kid": "attacker-key"}, base)
    if case == "foreign-key-real-kid":
        _, sign = _foreign_signer()
        return sign_with(sign, {"alg": "ES256", "typ": "JWT", "kid": kid}, base)
    if case in ("jku", "x5u", "jwk"):
        key, sign = _foreign_signer()
        extra: dict[str, Any] = {
            "jku": {"jku": f"{h.upstream.url}/.well-known/jwks.json"},
            "x5u": {"x5u": f"{h.upstream.url}/cert.pem"},
            "jwk": {"jwk": public_jwk(key.public_key(), kid)},
        }[case]
        return sign_with(sign, {"alg": "ES256", "typ": "JWT", "kid": kid, **extra}, base)
    if case == "64kb":
        padded = claims_for(h.broker, job="x" * 64 * 1024)
        return kms_token(h.stack, h.moto, h.broker, job=padded["job"])
    if case == "garbage-signature":
        good = kms_token(h.stack, h.moto, h.broker)
        head, body, sig = good.split(".")
        return f"{head}.{body}.{sig[:-4]}AAAA"
    if case == "claims-tampered":
        good = kms_token(h.stack, h.moto, h.broker)
        head, _, sig = good.split(".")
        return f"{head}.{_b64(json.dumps({**base, 'conn': 'store-test'}).encode())}.{sig}"
    raise AssertionError(case)


CASES = [
    ("alg-none", 401, "invalid_token"),
    ("hs256-with-public-key", 401, "invalid_token"),
    ("expired", 401, "token_expired"),
    ("nbf-future", 401, "token_not_yet_valid"),
    ("wrong-aud", 401, "invalid_token"),
    ("wrong-iss", 401, "invalid_token"),
    ("unknown-kid", 401, "invalid_token"),
    ("foreign-key-real-kid", 401, "invalid_token"),
    ("jku", 401, "invalid_token"),
    ("x5u", 401, "invalid_token"),
    ("jwk", 401, "invalid_token"),
    ("64kb", 401, "invalid_token"),
    ("garbage-signature", 401, "invalid_token"),
    ("claims-tampered", 401, "invalid_token"),
]


@pytest.mark.parametrize(("case", "status", "code"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("place", ["proxy-credentials", "api-key"])
def test_token_attack_is_refused_and_nothing_goes_upstream(
    hostile: Hostile, case: str, status: int, code: str, place: str
) -> None:
    token = _attack(hostile, case)
    PRESENTED.append(token)
    mark = len(hostile.upstream.received)
    if place == "proxy-credentials":
        # Sent as a header, not in the proxy URL: clients cap URL length below 64 KB.
        auth = "Basic " + base64.b64encode(f"jit:{token}".encode()).decode()
        proxy = httpx.Proxy(hostile.gateway.url, headers={"Proxy-Authorization": auth})
        with httpx.Client(proxy=proxy, verify=str(hostile.bundle), trust_env=False, timeout=30) as c:
            resp = rerank(c, hostile.upstream)
    else:
        with client(hostile.gateway, hostile.bundle, None) as c:
            body = {"model": "rerank-v3.5", "query": "q", "documents": ["a"]}
            resp = c.post(f"{hostile.upstream.url}/v2/rerank", json=body, headers={"Authorization": f"Bearer {token}"})
    if case == "64kb" and place == "proxy-credentials":
        # A 64 KB Proxy-Authorization is refused before or by the token check; never forwarded.
        assert resp.status_code in (400, 401, 407, 431), resp.text
    else:
        assert (resp.status_code, resp.json()) == (status, {"code": code, "message": resp.json()["message"]})
        assert token not in resp.text
    assert list(hostile.upstream.received)[mark:] == []


def test_revoked_token_is_refused(
    hostile: Hostile, mint: Callable[..., dict[str, Any]], oidc_issuer: Any
) -> None:
    answer = mint("cohere-test")
    PRESENTED.append(answer["token"])
    with client(hostile.gateway, hostile.bundle, answer["token"]) as c:
        assert rerank(c, hostile.upstream).status_code == 200
        revoke = httpx.delete(
            f"{hostile.broker}/v1/tokens/{answer['jti']}",
            headers={"Authorization": f"Bearer {oidc_issuer.mint(CI_SUB, CI_CLAIMS)}"},
            timeout=10,
        )
        assert revoke.status_code == 200, revoke.text
        assert wait_for(lambda: rerank(c, hostile.upstream).status_code == 403, 15)
        mark = len(hostile.upstream.received)
        resp = rerank(c, hostile.upstream)
    assert (resp.status_code, resp.json()["code"]) == (403, "token_revoked")
    assert list(hostile.upstream.received)[mark:] == []


def test_token_for_another_connection_is_refused(hostile: Hostile, mint: Callable[..., dict[str, Any]]) -> None:
    token = mint("jina-test")["token"]
    PRESENTED.append(token)
    mark = len(hostile.upstream.received)
    with client(hostile.gateway, hostile.bundle, token) as c:
        resp = rerank(c, hostile.upstream)
    assert (resp.status_code, resp.json()["code"]) == (403, "wrong_connection")
    assert list(hostile.upstream.received)[mark:] == []


def test_token_past_its_request_limit_is_refused(hostile: Hostile) -> None:
    token = kms_token(hostile.stack, hostile.moto, hostile.broker, limits={"max_requests": 3})
    PRESENTED.append(token)
    mark = len(hostile.upstream.received)
    with client(hostile.gateway, hostile.bundle, token) as c:
        statuses = [rerank(c, hostile.upstream) for _ in range(6)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429, 429, 429]
    assert {r.json()["code"] for r in statuses[3:]} == {"request_limit_exceeded"}
    assert len(list(hostile.upstream.received)[mark:]) == 3


def test_token_in_the_query_string_is_refused_and_never_recorded(
    hostile: Hostile, mint: Callable[..., dict[str, Any]]
) -> None:
    token = mint("cohere-test")["token"]
    mark = len(hostile.upstream.received)
    body = {"model": "rerank-v3.5", "query": "q", "documents": ["a"]}
    with client(hostile.gateway, hostile.bundle, None) as c:
        alone = c.post(f"{hostile.upstream.url}/v2/rerank", params={"api_key": token}, json=body)
    assert (alone.status_code, alone.json()["code"]) == (407, "token_required")
    assert list(hostile.upstream.received)[mark:] == []
    # Even beside valid proxy credentials the query copy is never forwarded as is, nor recorded.
    with client(hostile.gateway, hostile.bundle, token) as c:
        beside = c.post(f"{hostile.upstream.url}/v2/rerank", params={"token": token}, json=body)
    assert beside.status_code in (200, 403), beside.text
    for seen in list(hostile.upstream.received)[mark:]:
        assert token not in seen.path
    assert token not in beside.text
    digest_prefix = token.split(".")[2][:16]
    blob_ok = wait_for(lambda: _records_settled(hostile), 10)
    assert blob_ok
    blob = raw_record_bytes(hostile.moto, hostile.stack.bucket, hostile.gateway_id, hostile.spool)
    assert token.encode() not in blob and digest_prefix.encode() not in blob


@pytest.mark.parametrize("place", ["proxy-credentials", "api-key"])
def test_copies_of_the_token_in_other_headers_never_reach_the_upstream(
    hostile: Hostile, mint: Callable[..., dict[str, Any]], place: str
) -> None:
    """An SDK that sends its key twice, or a debug header quoting it: the request goes through,
    and what the upstream receives holds the real key, never the JIT token."""
    token = mint("cohere-test")["token"]
    PRESENTED.append(token)
    mark = len(hostile.upstream.received)
    body = {"model": "rerank-v3.5", "query": "q", "documents": ["a", "b"]}
    copies = {"X-Goog-Api-Key": token, "X-Debug": f"key={token}; trace=1"}
    key = token if place == "api-key" else "placeholder"
    with client(hostile.gateway, hostile.bundle, token if place == "proxy-credentials" else None) as c:
        resp = c.post(
            f"{hostile.upstream.url}/v2/rerank", json=body, headers={"Authorization": f"Bearer {key}", **copies}
        )
    assert resp.status_code == 200, resp.text
    [seen] = list(hostile.upstream.received)[mark:]
    assert all(token not in value for value in seen.headers.values())
    assert {"x-goog-api-key", "x-debug"}.isdisjoint(name.lower() for name in seen.headers)
    assert seen.headers.get("Authorization", seen.headers.get("authorization", "")).startswith("Bearer ")


def _records_settled(h: Hostile) -> bool:
    return bool(raw_record_bytes(h.moto, h.stack.bucket, h.gateway_id, h.spool))


def test_zz_no_presented_token_is_in_any_record(hostile: Hostile) -> None:
    """Runs last in this module: every refused attack above was recorded without its token."""
    assert PRESENTED
    assert wait_for(lambda: _records_settled(hostile), 10)
    time.sleep(1.0)  # the last segment rotates and ships
    blob = raw_record_bytes(hostile.moto, hostile.stack.bucket, hostile.gateway_id, hostile.spool)
    for token in PRESENTED:
        signature = token.split(".")[2]
        assert token.encode() not in blob
        if len(signature) > 20:
            assert signature.encode() not in blob
