"""The local stand-ins others build on: child servers, the moto seed, the dev OIDC issuer, the
sample rerank upstreams."""

from __future__ import annotations

import json
import secrets
import ssl
import sys

import boto3
import httpx
import jwt
import pytest

from jitgate.devstack.aws import Stack, seed
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import secret_id
from jitgate.devstack.process import ChildServer
from jitgate.devstack.upstream import DIALECTS, ROUTES, RerankDialect, Upstream
from jitgate.policy import Policy


def test_child_server_skips_warnings_before_its_url_and_reports_a_dead_child() -> None:
    script = "print('DeprecationWarning: x'); print('http://127.0.0.1:9', flush=True); import time; time.sleep(60)"
    with ChildServer([sys.executable, "-c", script]) as child:
        assert child.url == "http://127.0.0.1:9" and list(child.log) == ["DeprecationWarning: x"]
    with pytest.raises(RuntimeError, match="cannot bind"):
        ChildServer([sys.executable, "-c", "import sys; sys.exit('cannot bind')"]).start()


def test_seed_matches_the_shared_table_and_bucket_shapes(aws_stack: Stack, test_policy: Policy) -> None:
    kw = {"endpoint_url": aws_stack.endpoint_url, "region_name": aws_stack.region}
    ddb = boto3.client("dynamodb", **kw)
    table = ddb.describe_table(TableName=aws_stack.table)["Table"]
    assert {(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]} == {("pk", "HASH"), ("sk", "RANGE")}
    ttl = ddb.describe_time_to_live(TableName=aws_stack.table)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at"
    key = boto3.client("kms", **kw).describe_key(KeyId=aws_stack.key_id)["KeyMetadata"]
    assert (key["KeySpec"], key["KeyUsage"]) == ("ECC_NIST_P256", "SIGN_VERIFY")
    sm = boto3.client("secretsmanager", **kw)
    cohere = json.loads(sm.get_secret_value(SecretId=secret_id("cohere-test"))["SecretString"])
    assert cohere == {"api_key": aws_stack.secrets[secret_id("cohere-test")]}  # json_key wrapping
    store = sm.get_secret_value(SecretId=secret_id("store-test"))["SecretString"]
    assert store == aws_stack.secrets[secret_id("store-test")]  # no json_key: the raw value
    assert set(aws_stack.secrets) == {c.credential.secret_id for c in test_policy.connections.values()}


def test_seed_refuses_a_half_seeded_stack(moto_server: str, test_policy: Policy) -> None:
    with pytest.raises(ValueError, match="needs values"):
        seed(moto_server, policy=test_policy, secrets={secret_id("cohere-test"): "x"})


def test_dev_issuer_mints_over_http_for_the_cli(oidc_issuer: OidcIssuer) -> None:
    resp = httpx.post(f"{oidc_issuer.url}/dev/token", json={"sub": "dev-user", "claims": {"groups": ["g"]}}, timeout=5)
    token = resp.json()["token"]
    jwk = next(k for k in oidc_issuer.jwks()["keys"] if k["kid"] == jwt.get_unverified_header(token)["kid"])
    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["RS256"], audience="jitgate", issuer=oidc_issuer.url)
    assert (claims["sub"], claims["groups"]) == ("dev-user", ["g"])
    bad = httpx.post(f"{oidc_issuer.url}/dev/token", json={"claims": {}}, timeout=5)
    assert (bad.status_code, bad.json()["code"]) == (400, "bad_request")


_BODIES = {"/rerank": {"query": "whale", "texts": ["a cat", "a blue whale"]}}
_DOCS_BODY = {"model": "m", "query": "whale", "documents": ["a cat", "a blue whale"]}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_each_sample_upstream_speaks_its_own_dialect_only(dialect: RerankDialect) -> None:
    key = "k-" + secrets.token_urlsafe(12)
    with Upstream(api_keys=[key], dialect=dialect) as up:
        ctx = ssl.create_default_context(cadata=up.ca_pem().decode())
        with httpx.Client(base_url=up.url, verify=ctx, trust_env=False, timeout=10,
                          headers={"Authorization": f"Bearer {key}"}) as c:
            for route in ("/v1/rerank", "/v2/rerank", "/rerank", "/api/v2/tenants/t/databases/d/collections/c/get"):
                resp = c.post(route, json=_BODIES.get(route, _DOCS_BODY))
                assert resp.status_code == (200 if route in ROUTES[dialect] else 404), (route, resp.text)
            answer = c.post(sorted(ROUTES[dialect])[0], json=_BODIES.get(sorted(ROUTES[dialect])[0], _DOCS_BODY))
            assert c.post("/rerank", json={}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    shape = answer.json()
    ranked = {
        "cohere": lambda: shape["results"], "jina": lambda: shape["results"], "voyage": lambda: shape["data"],
        "tei": lambda: shape,
    }[dialect]()
    assert ranked[0]["index"] == 1  # "a blue whale"
    if dialect == "jina":
        assert ranked[0]["document"] == {"text": "a blue whale"}  # Jina echoes the documents
