"""The broker end to end: real HTTP to `python -m broker.local`, a moto server, a real OIDC issuer.

Mint, verify the minted token against the published JWKS, revoke; and every attack on the
broker's OIDC check from issue 2 is refused with 401 and no token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from jitgate.devstack.aws import Stack
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import ADMIN_GROUP, CI_CLAIMS, READER_SUB
from jitgate.devstack.process import ChildServer
from jitgate.state import REVOCATION_PK
from jitgate.token import MAX_LEEWAY, KeySet, verify_token

CI_SUB = "repo:acme/search-ranker:ref:refs/heads/main"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())


def _post(broker: str, oidc: str | None, body: Any = None, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {oidc}"} if oidc is not None else {}
    return httpx.post(f"{broker}/v1/tokens", json=body or {"connection": "cohere-test"}, headers=headers, timeout=10)


def _delete(broker: str, oidc: str, jti: str) -> httpx.Response:
    return httpx.delete(f"{broker}/v1/tokens/{jti}", headers={"Authorization": f"Bearer {oidc}"}, timeout=10)


def _revoked(stack: Stack, jti: str) -> dict[str, Any] | None:
    ddb = boto3.client("dynamodb", endpoint_url=stack.endpoint_url, region_name=stack.region)
    item: dict[str, Any] | None = ddb.get_item(
        TableName=stack.table, Key={"pk": {"S": REVOCATION_PK}, "sk": {"S": jti}}
    ).get("Item")
    return item


def _event_lines(stack: Stack) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=stack.endpoint_url, region_name=stack.region)
    lines: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket, Prefix="token-events/"):
        for obj in page.get("Contents", []):
            lines += s3.get_object(Bucket=stack.bucket, Key=obj["Key"])["Body"].read().decode().splitlines()
    return lines


def test_mint_verify_revoke(
    broker: str, broker_process: ChildServer, oidc_issuer: OidcIssuer, aws_stack: Stack
) -> None:
    oidc = oidc_issuer.mint(CI_SUB, CI_CLAIMS)
    before = int(time.time())
    resp = _post(broker, oidc, {"connection": "cohere-test", "ttl": "2h", "job": "nightly-rerank"})
    assert resp.status_code == 201, resp.text
    answer = resp.json()
    assert answer["clamped"] is True and answer["ttl"] == 30 * 60  # the grant's max_ttl, as Vault clamps
    assert before + 30 * 60 <= answer["expires_at"] <= int(time.time()) + 30 * 60
    assert answer["key_env"] == "CO_API_KEY" and answer["connection"] == "cohere-test"

    jwks = httpx.get(f"{broker}/.well-known/jwks.json", timeout=10).json()
    assert [k["kid"] for k in jwks["keys"]] == [aws_stack.key_id]
    claims = verify_token(answer["token"], KeySet.from_jwks(jwks), now=time.time(), issuer=broker)
    assert (claims.sub, claims.conn, claims.jti, claims.job) == (CI_SUB, "cohere-test", answer["jti"], "nightly-rerank")
    assert claims.scope.operations == ("rerank",)
    assert claims.exp == answer["expires_at"]

    # Someone else may not revoke it; its subject may, twice (idempotent); the item outlives the leeway.
    other = oidc_issuer.mint(READER_SUB)
    assert _delete(broker, other, claims.jti).json()["code"] == "not_token_owner"
    assert _revoked(aws_stack, claims.jti) is None
    first = _delete(broker, oidc_issuer.mint(CI_SUB, CI_CLAIMS), claims.jti)
    assert first.status_code == 200 and first.json()["already_revoked"] is False
    again = _delete(broker, oidc_issuer.mint(CI_SUB, CI_CLAIMS), claims.jti)
    assert again.status_code == 200 and again.json()["already_revoked"] is True
    assert again.json()["revoked_at"] == first.json()["revoked_at"]
    item = _revoked(aws_stack, claims.jti)
    assert item is not None and int(item["expires_at"]["N"]) == claims.exp + MAX_LEEWAY

    # The audit trail has the issuance and the revocation, and never the token.
    lines = _event_lines(aws_stack)
    mine = [json.loads(line) for line in lines if claims.jti in line]
    assert {e["event_type"] for e in mine} >= {"issued", "revoked"}
    assert all(answer["token"] not in line and oidc not in line for line in lines)
    # ... and neither do the broker's logs (which do name the jti).
    deadline = time.monotonic() + 10  # the drain thread reads the child's output asynchronously
    while claims.jti not in "\n".join(broker_process.log) and time.monotonic() < deadline:
        time.sleep(0.05)
    logs = "\n".join(broker_process.log)
    assert claims.jti in logs
    assert answer["token"] not in logs and oidc not in logs and answer["token"].split(".")[2] not in logs


def test_admin_may_revoke_and_a_revoked_token_fails_the_gateway_check(
    broker: str, oidc_issuer: OidcIssuer, aws_stack: Stack, mint: Callable[..., dict[str, Any]]
) -> None:
    from jitgate.state import fetch_revocations  # the gateway's reader of the same items

    ddb = boto3.client("dynamodb", endpoint_url=aws_stack.endpoint_url, region_name=aws_stack.region)
    answer, other = mint("jina-test"), mint("jina-test")
    admin = oidc_issuer.mint("alice@example.com", {"groups": [ADMIN_GROUP]})
    assert _delete(broker, admin, answer["jti"]).status_code == 200
    revoked = fetch_revocations(ddb, aws_stack.table, now=time.time())
    assert answer["jti"] in revoked and other["jti"] not in revoked
    # Held past exp while a gateway's leeway still accepts the token; not needed after that.
    assert answer["jti"] in fetch_revocations(ddb, aws_stack.table, now=answer["expires_at"] + 1)
    assert answer["jti"] not in fetch_revocations(ddb, aws_stack.table, now=answer["expires_at"] + MAX_LEEWAY)
    unknown = _delete(broker, admin, "0" * 32)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "unknown_token")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"connection": "nope"}, 404, "unknown_connection"),
        ({"connection": "store-test"}, 403, "not_granted"),
        ({"connection": "cohere-test", "operations": ["embed"]}, 400, "bad_request"),
        ({"connection": "cohere-test", "ttl": "forever"}, 400, "bad_request"),
        ({"connection": "cohere-test", "extra": 1}, 400, "bad_request"),
        ([], 400, "bad_request"),
    ],
)
def test_refusals_have_stable_codes(
    broker: str, oidc_issuer: OidcIssuer, body: Any, status: int, code: str
) -> None:
    resp = httpx.post(
        f"{broker}/v1/tokens",
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {oidc_issuer.mint(CI_SUB, CI_CLAIMS)}"},
        timeout=10,
    )
    assert (resp.status_code, resp.json()) == (status, {"code": code, "message": resp.json()["message"]})
    assert "token" not in resp.json()


DEEP = 3000  # levels: under 16 kB, past Python's recursion limit


@pytest.mark.parametrize(
    "content",
    [
        "[" * DEEP + "]" * DEEP,
        '{"connection": "cohere-test", "ttl": ' + "[" * DEEP + "]" * DEEP + "}",
        '{"connection": "cohere-test", "operations": ' + '{"a":' * DEEP + "1" + "}" * DEEP + "}",
        '{"connection": "cohere-test", "ttl": true}',
        '{"connection": "cohere-test", "ttl": false}',
        '{"connection": true}',
    ],
    ids=["deep_array", "deep_ttl", "deep_operations", "ttl_true", "ttl_false", "connection_true"],
)
def test_a_malformed_body_is_400_and_its_denial_is_recorded(
    broker: str, oidc_issuer: OidcIssuer, aws_stack: Stack, content: str
) -> None:
    marker = f"malformed-{uuid.uuid4().hex}"  # finds this request's event among the others
    resp = httpx.post(
        f"{broker}/v1/tokens",
        content=content,
        headers={"Authorization": f"Bearer {oidc_issuer.mint(CI_SUB, CI_CLAIMS)}", "User-Agent": marker},
        timeout=10,
    )
    assert (resp.status_code, resp.json()["code"]) == (400, "bad_request"), resp.text
    assert "token" not in resp.json()
    (event,) = [json.loads(line) for line in _event_lines(aws_stack) if marker in line]
    assert (event["event_type"], event["status"], event["code"], event["sub"]) == ("denied", 400, "bad_request", CI_SUB)


# -- attacks on the OIDC check: each must be refused with 401 -------------------------------------


def _attacker() -> OidcIssuer:
    """Another issuer on loopback, serving its own keys: what a `jku`/`x5u` would point at."""
    return OidcIssuer().start()


def _attack_tokens(issuer: OidcIssuer) -> dict[str, str]:
    now = int(time.time())
    good = issuer.claims(CI_SUB, CI_CLAIMS)
    pem = issuer.private_key().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_input = _unsigned({"alg": "HS256", "typ": "JWT", "kid": issuer.kid}, good)
    hs_sig = _b64(hmac.new(pem, hs_input.encode(), hashlib.sha256).digest())
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_stranger = ec.generate_private_key(ec.SECP256R1())
    attacker = _attacker()
    try:
        evil_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(attacker.private_key().public_key()))
        evil = attacker.private_key()
        tokens = {
            "alg_none": _unsigned({"alg": "none", "typ": "JWT", "kid": issuer.kid}, good) + ".",
            "alg_none_no_sig_part": _unsigned({"alg": "none"}, good),
            "hs256_with_public_key": hs_input + "." + hs_sig,
            "expired": issuer.mint(CI_SUB, CI_CLAIMS, now=now - 3600, ttl=300),
            "nbf_in_future": issuer.mint(CI_SUB, {**CI_CLAIMS, "nbf": now + 3600}),
            "iat_in_future": issuer.mint(CI_SUB, CI_CLAIMS, now=now + 3600),
            "wrong_aud": issuer.mint(CI_SUB, CI_CLAIMS, aud="someone-else"),
            "wrong_iss": issuer.mint(CI_SUB, {**CI_CLAIMS, "iss": attacker.url}),
            "no_exp": issuer.mint(CI_SUB, {**CI_CLAIMS, "exp": None}),
            "no_sub": issuer.mint(CI_SUB, {**CI_CLAIMS, "sub": None}),
            "unknown_kid": jwt.encode(good, issuer.private_key(), algorithm="RS256", headers={"kid": "not-a-kid"}),
            "unpublished_key_with_real_kid": jwt.encode(
                good, stranger, algorithm="RS256", headers={"kid": issuer.kid}
            ),
            "es256_unpublished_key_with_real_kid": jwt.encode(
                good, ec_stranger, algorithm="ES256", headers={"kid": issuer.kid}
            ),
            "jku_elsewhere": jwt.encode(
                good, evil, algorithm="RS256", headers={"kid": attacker.kid, "jku": f"{attacker.url}/jwks.json"}
            ),
            "jku_elsewhere_real_kid": jwt.encode(
                good, evil, algorithm="RS256", headers={"kid": issuer.kid, "jku": f"{attacker.url}/jwks.json"}
            ),
            "x5u_elsewhere": jwt.encode(
                good, evil, algorithm="RS256", headers={"kid": issuer.kid, "x5u": f"{attacker.url}/cert.pem"}
            ),
            "embedded_jwk": jwt.encode(
                good, evil, algorithm="RS256", headers={"kid": issuer.kid, "jwk": {**evil_jwk, "kid": issuer.kid}}
            ),
            "tampered_payload": ".".join(
                [issuer.mint(CI_SUB, CI_CLAIMS).split(".")[0], _b64(json.dumps({**good, "sub": "root"}).encode()),
                 issuer.mint(CI_SUB, CI_CLAIMS).split(".")[2]]
            ),
            "garbage": "not.a.jwt",
        }
    finally:
        attacker.stop()
    return tokens


ATTACKS = [
    "alg_none", "alg_none_no_sig_part", "hs256_with_public_key", "expired", "nbf_in_future", "iat_in_future",
    "wrong_aud", "wrong_iss", "no_exp", "no_sub", "unknown_kid", "unpublished_key_with_real_kid",
    "es256_unpublished_key_with_real_kid", "jku_elsewhere", "jku_elsewhere_real_kid", "x5u_elsewhere",
    "embedded_jwk", "tampered_payload", "garbage",
]


@pytest.fixture(scope="module")
def attack_tokens(oidc_issuer: OidcIssuer) -> dict[str, str]:
    return _attack_tokens(oidc_issuer)


@pytest.mark.parametrize("attack", ATTACKS)
def test_attack_is_refused_with_401(broker: str, attack_tokens: dict[str, str], attack: str) -> None:
    for path in ("mint", "revoke"):
        resp = (
            _post(broker, attack_tokens[attack])
            if path == "mint"
            else _delete(broker, attack_tokens[attack], "0" * 32)
        )
        assert resp.status_code == 401, (attack, path, resp.text)
        body = resp.json()
        assert body["code"] == "invalid_token" and "token" not in body
        assert resp.headers["www-authenticate"].startswith("Bearer")


def test_the_same_identity_unaltered_is_accepted(broker: str, oidc_issuer: OidcIssuer) -> None:
    """The control for the attacks above: the untampered token of the same identity mints."""
    assert _post(broker, oidc_issuer.mint(CI_SUB, CI_CLAIMS)).status_code == 201


@pytest.mark.parametrize("header", [None, "Bearer", "Basic dXNlcjpwYXNz", "Token abc"])
def test_missing_identity_is_401(broker: str, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    resp = httpx.post(f"{broker}/v1/tokens", json={"connection": "cohere-test"}, headers=headers, timeout=10)
    assert (resp.status_code, resp.json()["code"]) == (401, "unauthenticated")
