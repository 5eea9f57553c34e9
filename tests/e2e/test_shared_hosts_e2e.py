"""Two connections on one host, end to end: `cohere-a` and `cohere-b` are two accounts of one
vendor, both reached at api.cohere.com and sent to the same HTTPS upstream, with different keys,
key headers, limits, masking profiles and operations. A broker (its local adapter) mints from a
policy holding both; one `mitmdump` gateway serves both; unmodified clients (cohere SDK on its
default vendor URL, httpx with proxy credentials). Each token reaches the upstream with exactly
its own connection's key; a cohere-a token cannot use what only cohere-b has."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import cohere
import httpx
import pytest
import yaml

from jitgate.devstack.aws import Stack, local_broker
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import CI_CLAIMS
from jitgate.devstack.upstream import Received, Upstream
from tests.e2e.conftest import REPO
from tests.e2e.gateway import Gateway, jitgate_options, start_gateway
from tests.e2e.test_gateway_e2e import CI_SUB, DOCS, QUERY

VENDOR = "https://api.cohere.com"
CONNS = ("cohere-a", "cohere-b")


def _policy(issuer: str, upstream: str, suffix: str) -> dict[str, Any]:
    match = {"issuer": issuer, "claims": {"repository": [CI_CLAIMS["repository"]]}}
    return {
        "version": 1,
        "issuers": [{"issuer": issuer, "audience": "jitgate"}],
        "profiles": {"default": {"request_pii": "mask"}, "strict": {"request_pii": "block"}},
        "connections": {
            "cohere-a": {
                "dialect": "cohere",
                "upstream": upstream,
                "hosts": ["api.cohere.com"],
                "credential": {"secret_id": f"jitgate/shared-{suffix}/cohere-a", "json_key": "api_key"},
            },
            "cohere-b": {
                "dialect": "cohere",
                "upstream": upstream,
                "hosts": ["api.cohere.com"],
                "mask": "strict",
                "credential": {"secret_id": f"jitgate/shared-{suffix}/cohere-b", "header": "X-Api-Key",
                               "format": "{secret}"},
                "operations": {"embed": [{"method": "POST", "path": "/v2/embed"}]},
            },
        },
        "grants": [
            {"name": "account-a", "match": match, "connections": ["cohere-a"], "operations": ["rerank"],
             "limits": {"max_documents": 10}},
            {"name": "account-b", "match": match, "connections": ["cohere-b"], "operations": ["rerank", "embed"],
             "limits": {"max_documents": len(DOCS)}},
        ],
    }


@pytest.fixture(scope="module")
def keys(aws_stack: Stack, moto_server: str) -> dict[str, str]:
    """Each account's real upstream key, made now and stored in (moto) Secrets Manager."""
    suffix = secrets.token_hex(4)
    made = {name: f"upstream-{name}-{secrets.token_urlsafe(18)}" for name in CONNS}
    sm = boto3.client("secretsmanager", endpoint_url=moto_server, region_name=aws_stack.region)
    sm.create_secret(Name=f"jitgate/shared-{suffix}/cohere-a", SecretString=json.dumps({"api_key": made["cohere-a"]}))
    sm.create_secret(Name=f"jitgate/shared-{suffix}/cohere-b", SecretString=made["cohere-b"])
    return {"suffix": suffix, **made}


@pytest.fixture(scope="module")
def upstream(keys: dict[str, str]) -> Iterator[Upstream]:
    with Upstream(api_keys=[keys["cohere-a"], keys["cohere-b"]]) as up:  # the vendor accepts both accounts
        yield up


@pytest.fixture(scope="module")
def shared_policy(tmp_path_factory: pytest.TempPathFactory, oidc_issuer: OidcIssuer, upstream: Upstream,
                  keys: dict[str, str]) -> Path:
    path = tmp_path_factory.mktemp("shared") / "policy.yaml"
    path.write_text(yaml.safe_dump(_policy(oidc_issuer.url, upstream.url, keys["suffix"]), sort_keys=False))
    return path


@pytest.fixture(scope="module")
def shared_broker(aws_stack: Stack, shared_policy: Path) -> Iterator[str]:
    """A broker of its own: the session broker's policy has no cohere-a / cohere-b."""
    with local_broker(aws_stack, shared_policy, cwd=REPO) as proc:
        yield proc.url


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream, shared_policy: Path, shared_broker: str,
            aws_stack: Stack, moto_server: str) -> Iterator[Gateway]:
    work = tmp_path_factory.mktemp("shared-gateway")
    ca = work / "upstream-ca.pem"
    ca.write_bytes(upstream.ca_pem())
    options = jitgate_options(policy=shared_policy, jwks_url=f"{shared_broker}/.well-known/jwks.json",
                              table=aws_stack.table, aws_endpoint=moto_server, region=aws_stack.region, upstream_ca=ca)
    with start_gateway(work, options=options) as gw:
        yield gw
        if gw.proc.poll() is not None:
            pytest.fail("the gateway died:\n" + "\n".join(gw.log))


@pytest.fixture(scope="module")
def mint_for(shared_broker: str, oidc_issuer: OidcIssuer) -> Callable[[str], str]:
    def _mint(connection: str) -> str:
        oidc = oidc_issuer.mint(CI_SUB, dict(CI_CLAIMS))
        resp = httpx.post(f"{shared_broker}/v1/tokens", json={"connection": connection},
                          headers={"Authorization": f"Bearer {oidc}"}, timeout=10)
        assert resp.status_code == 201, resp.text
        token: str = resp.json()["token"]
        return token

    return _mint


@pytest.fixture
def bundle(gateway: Gateway, tmp_path: Path) -> Path:
    return gateway.client_bundle(tmp_path / "bundle.pem")


def _key_seen(r: Received) -> dict[str, str | None]:
    return {"authorization": r.headers.get("authorization"), "x-api-key": r.headers.get("x-api-key")}


def _expected_key(conn: str, keys: dict[str, str]) -> dict[str, str | None]:
    if conn == "cohere-a":
        return {"authorization": f"Bearer {keys['cohere-a']}", "x-api-key": None}
    return {"authorization": None, "x-api-key": keys["cohere-b"]}


def _assert_only_own_key(seen: list[Received], conn: str, token: str, keys: dict[str, str]) -> None:
    other = next(c for c in CONNS if c != conn)
    assert seen, "the upstream received nothing"
    for r in seen:
        assert _key_seen(r) == _expected_key(conn, keys)
        dump = json.dumps(r.headers)
        assert keys[other] not in dump and token not in dump and token.encode() not in r.body
        assert "proxy-authorization" not in r.headers


def test_each_token_reranks_with_its_own_key_through_one_gateway(
    gateway: Gateway, bundle: Path, upstream: Upstream, mint_for: Callable[[str], str], keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cohere SDK on its default URL, the token as its API key: the host is shared, the token picks."""
    monkeypatch.setenv("HTTPS_PROXY", gateway.url)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setenv("NO_PROXY", "")
    for conn in (*CONNS, *CONNS):  # interleaved, on one gateway
        token = mint_for(conn)
        mark = len(upstream.received)
        co = cohere.ClientV2(api_key=token, max_retries=0)  # https://api.cohere.com, unchanged
        answer = co.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=2)
        assert [r.index for r in answer.results] == [1, 2]
        seen = list(upstream.received)[mark:]
        assert len(seen) == 1
        _assert_only_own_key(seen, conn, token, keys)


def test_proxy_credentials_on_one_host_pick_by_token(
    gateway: Gateway, bundle: Path, upstream: Upstream, mint_for: Callable[[str], str], keys: dict[str, str]
) -> None:
    """httpx with the token as proxy credentials; the client also sends a key header of the other account."""
    body = {"model": "rerank-v3.5", "query": QUERY, "documents": DOCS}
    for conn in CONNS:
        token = mint_for(conn)
        mark = len(upstream.received)
        with httpx.Client(proxy=gateway.proxy_url(token), verify=str(bundle), timeout=30) as client:
            resp = client.post(f"{VENDOR}/v2/rerank", json=body, headers={"X-Api-Key": "client-own-guess"})
        assert resp.status_code == 200, resp.text
        assert resp.json()["results"][0]["index"] == 1
        assert keys["cohere-a"] not in resp.text and keys["cohere-b"] not in resp.text
        _assert_only_own_key(list(upstream.received)[mark:], conn, token, keys)


def test_a_token_for_a_cannot_use_b_only_operation_limits_or_mask(
    gateway: Gateway, bundle: Path, upstream: Upstream, mint_for: Callable[[str], str], keys: dict[str, str]
) -> None:
    ta, tb = mint_for("cohere-a"), mint_for("cohere-b")
    mark = len(upstream.received)

    def post(token: str, path: str, body: dict[str, Any]) -> httpx.Response:
        with httpx.Client(proxy=gateway.proxy_url(token), verify=str(bundle), timeout=30) as client:
            return client.post(f"{VENDOR}{path}", json=body)

    # `embed` is cohere-b's operation only: an A token is refused on the shared host; nothing goes upstream.
    refused = post(ta, "/v2/embed", {"texts": ["hello"], "model": "embed-v4.0"})
    assert (refused.status_code, refused.json()["code"]) == (403, "operation_not_allowed")
    assert list(upstream.received)[mark:] == []
    # B's document limit (4) is B's: one document more is refused with B's token, passes with A's (10).
    five = {"query": QUERY, "documents": [*DOCS, "Ottawa is the capital of Canada."]}
    too_many_for_b = post(tb, "/v2/rerank", five)
    assert (too_many_for_b.status_code, too_many_for_b.json()["code"]) == (413, "payload_too_large")
    assert list(upstream.received)[mark:] == []
    within_a = post(ta, "/v2/rerank", five)
    assert within_a.status_code == 200, within_a.text
    _assert_only_own_key(list(upstream.received)[mark:], "cohere-a", ta, keys)
    mark = len(upstream.received)
    # B's strict profile blocks PII; A's masks it and forwards.
    email = "jane.doe" + "@" + "example.org"
    pii = {"query": QUERY, "documents": [f"Write to {email} about the capital."]}
    blocked = post(tb, "/v2/rerank", pii)
    assert (blocked.status_code, blocked.json()["code"]) == (403, "leak_blocked")
    assert list(upstream.received)[mark:] == []
    masked = post(ta, "/v2/rerank", pii)
    assert masked.status_code == 200, masked.text
    seen = list(upstream.received)[mark:]
    assert len(seen) == 1 and email.encode() not in seen[0].body
    _assert_only_own_key(seen, "cohere-a", ta, keys)
