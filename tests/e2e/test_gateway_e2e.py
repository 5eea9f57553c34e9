"""The gateway end to end: moto server, the broker behind its local adapter, an HTTPS upstream
with a private CA, the real Chroma server (store-test), `mitmdump -s addon/jitgate_addons.py`, and
unmodified clients (cohere SDK, httpx, requests) pointed at it with HTTPS_PROXY."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import cohere
import httpx
import pytest
import requests
import yaml

from jitgate.devstack.aws import Stack
from jitgate.devstack.chroma import SEED, ChromaServer, collection_path, embedding
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import CI_CLAIMS, READER_SUB, policy_dict, secret_id
from jitgate.devstack.upstream import Upstream
from jitgate.token import AUDIENCE, Claims, Limits, Scope, encode_token, new_jti
from tests.e2e.gateway import Gateway, jitgate_options, start_gateway
from tests.relay import Relay, relay_to

CI_SUB = "repo:acme/search-ranker:ref:refs/heads/main"
DOCS = [
    "Carson City is the capital city of the American state of Nevada.",
    "Washington, D.C. is the capital of the United States.",
    "Capital punishment has existed in the United States since before it was a country.",
    "The Commonwealth of the Northern Mariana Islands is a group of islands in the Pacific Ocean.",
]
QUERY = "What is the capital of the United States?"


@pytest.fixture(scope="module")
def real_keys(aws_stack: Stack) -> dict[str, str]:
    return {name: aws_stack.secrets[secret_id(name)] for name in ("cohere-test", "jina-test", "store-test")}


@pytest.fixture(scope="module")
def upstream(real_keys: dict[str, str]) -> Iterator[Upstream]:
    with Upstream(api_keys=real_keys.values()) as up:
        yield up


@pytest.fixture(scope="module")
def store_front(chroma_server: ChromaServer) -> Iterator[Relay]:
    """store-test's upstream: a relay in front of the real Chroma that keeps what it was sent."""
    with relay_to(chroma_server.url, record=True) as relay:
        yield relay


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    upstream: Upstream,
    store_front: Relay,
    oidc_issuer: OidcIssuer,
    broker: str,
    aws_stack: Stack,
    moto_server: str,
) -> Iterator[Gateway]:
    work = tmp_path_factory.mktemp("gateway")
    doc = policy_dict(
        oidc_issuer.url,
        upstreams={"cohere-test": upstream.url, "store-test": store_front.url},
    )
    doc["connections"]["cohere-test"]["hosts"] = ["api.cohere.com"]  # type: ignore[index]
    policy = work / "policy.yaml"
    policy.write_text(yaml.safe_dump(doc, sort_keys=False))
    ca = work / "upstream-ca.pem"
    ca.write_bytes(upstream.ca_pem())
    options = jitgate_options(
        policy=policy,
        jwks_url=f"{broker}/.well-known/jwks.json",
        table=aws_stack.table,
        aws_endpoint=moto_server,
        region=aws_stack.region,
        upstream_ca=ca,
    )
    with start_gateway(work, options=options) as gw:
        yield gw
        if gw.proc.poll() is not None:
            pytest.fail("the gateway died:\n" + "\n".join(gw.log))


@pytest.fixture
def client_env(gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str | None], None]:
    """Point this process's clients at the gateway, as a job would: HTTPS_PROXY and a CA bundle."""
    bundle = gateway.client_bundle(tmp_path / "bundle.pem")

    def _set(token: str | None) -> None:
        monkeypatch.setenv("HTTPS_PROXY", gateway.proxy_url(token))
        monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
        monkeypatch.setenv("NO_PROXY", "")

    return _set


def _token(mint: Callable[..., dict[str, Any]], connection: str = "cohere-test") -> str:
    token: str = mint(connection)["token"]
    return token


def _seen_since(upstream: Upstream, mark: int) -> list[Any]:
    return list(upstream.received)[mark:]


def _assert_clean(upstream: Upstream, mark: int, token: str, real: str) -> None:
    """The upstream got the real key on every request and never the JIT token."""
    seen = _seen_since(upstream, mark)
    assert seen, "the upstream received nothing"
    for r in seen:
        assert r.headers.get("authorization") == f"Bearer {real}"
        assert token not in json.dumps(r.headers) and token.encode() not in r.body
        assert "proxy-authorization" not in r.headers


def test_cohere_sdk_with_base_url_and_proxy_credentials(
    mint: Callable[..., dict[str, Any]], client_env: Callable[[str | None], None], upstream: Upstream,
    real_keys: dict[str, str],
) -> None:
    token = _token(mint)
    client_env(token)
    mark = len(upstream.received)
    co = cohere.ClientV2(api_key="placeholder-not-a-key", base_url=upstream.url, max_retries=0)
    answer = co.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=2)
    assert [r.index for r in answer.results] == [1, 2]
    assert answer.results[0].relevance_score > answer.results[1].relevance_score
    _assert_clean(upstream, mark, token, real_keys["cohere-test"])


def test_cohere_sdk_default_vendor_url_with_token_as_api_key(
    mint: Callable[..., dict[str, Any]], client_env: Callable[[str | None], None], upstream: Upstream,
    real_keys: dict[str, str],
) -> None:
    token = _token(mint)
    client_env(None)  # no proxy credentials: the token is the "API key"
    mark = len(upstream.received)
    co = cohere.ClientV2(api_key=token, max_retries=0)  # https://api.cohere.com, unchanged
    for _ in range(3):  # one kept-alive tunnel to api.cohere.com, each request sent to the real upstream
        answer = co.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
        assert answer.results[0].index == 1 and len(answer.results) == len(DOCS)
    assert len(_seen_since(upstream, mark)) == 3
    _assert_clean(upstream, mark, token, real_keys["cohere-test"])


def test_httpx_and_requests_never_see_the_real_key(
    mint: Callable[..., dict[str, Any]], client_env: Callable[[str | None], None], upstream: Upstream,
    real_keys: dict[str, str],
) -> None:
    token = _token(mint)
    client_env(token)
    mark = len(upstream.received)
    body = {"model": "rerank-english-v3.0", "query": QUERY, "documents": DOCS}
    via_httpx = httpx.post(f"{upstream.url}/v1/rerank", json=body, headers={"Authorization": "Bearer mine"})
    via_requests = requests.post(f"{upstream.url}/v2/rerank", json=body, timeout=30)
    real = real_keys["cohere-test"]
    for status, headers, text in (
        (via_httpx.status_code, dict(via_httpx.headers), via_httpx.text),
        (via_requests.status_code, dict(via_requests.headers), via_requests.text),
    ):
        assert status == 200, text
        assert real not in text and real not in json.dumps(headers)
        assert json.loads(text)["results"][0]["index"] == 1
    _assert_clean(upstream, mark, token, real)
    assert len(_seen_since(upstream, mark)) == 2


def test_no_token_is_407(client_env: Callable[[str | None], None], upstream: Upstream) -> None:
    client_env(None)
    mark = len(upstream.received)
    resp = httpx.post(f"{upstream.url}/v2/rerank", json={"query": "q", "documents": ["a"]})
    assert resp.status_code == 407
    assert resp.headers["Proxy-Authenticate"].startswith("Basic")
    assert resp.json()["code"] == "token_required"
    assert _seen_since(upstream, mark) == []


def test_mitmproxys_onboarding_app_needs_a_token_too(gateway: Gateway) -> None:
    """http://mitm.it through the proxy was mitmproxy's onboarding page and CA download, answered
    before the chain ran: with no token it is refused like any other request."""
    for path in ("/", "/cert/pem"):
        resp = httpx.get(f"http://mitm.it{path}", proxy=gateway.url, trust_env=False)
        assert resp.status_code == 407, path
        assert resp.json()["code"] == "token_required"
        assert b"BEGIN CERTIFICATE" not in resp.content


def _kms_signed_expired(aws_stack: Stack, moto_server: str, broker: str) -> str:
    """A token signed by the broker's own KMS key whose window has passed."""
    kms = boto3.client("kms", endpoint_url=moto_server, region_name=aws_stack.region)
    now = int(time.time())
    claims = Claims(
        iss=broker, aud=AUDIENCE, sub=CI_SUB, iat=now - 3600, nbf=now - 3600, exp=now - 600, jti=new_jti(),
        conn="cohere-test", scope=Scope(operations=("rerank",)), limits=Limits(), mask="default",
    )

    def sign(message: bytes) -> bytes:
        sig: bytes = kms.sign(
            KeyId=aws_stack.key_id, Message=message, MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256"
        )["Signature"]
        return sig

    return encode_token(claims, kid=aws_stack.key_id, sign_der=sign)


@pytest.mark.parametrize(
    ("case", "path", "status", "code"),
    [
        ("expired", "/v2/rerank", 401, "token_expired"),
        ("wrong-connection", "/v2/rerank", 403, "wrong_connection"),
        ("out-of-scope", "/v2/chat", 403, "operation_not_allowed"),
        ("garbage", "/v2/rerank", 401, "invalid_token"),
    ],
)
def test_refusals_have_their_codes(
    case: str, path: str, status: int, code: str,
    mint: Callable[..., dict[str, Any]], client_env: Callable[[str | None], None], upstream: Upstream,
    aws_stack: Stack, moto_server: str, broker: str,
) -> None:
    if case == "expired":
        token = _kms_signed_expired(aws_stack, moto_server, broker)
    elif case == "wrong-connection":
        token = _token(mint, "jina-test")
    elif case == "garbage":
        token = "eyJhbGciOiJFUzI1NiJ9.e30.AAAA"
    else:
        token = _token(mint)
    client_env(token)
    mark = len(upstream.received)
    resp = httpx.post(f"{upstream.url}{path}", json={"query": "q", "documents": ["a"]})
    assert (resp.status_code, resp.json()["code"]) == (status, code)
    assert set(resp.json()) == {"code", "message"}
    assert _seen_since(upstream, mark) == []


def test_revoked_token_is_refused_within_the_refresh_interval(
    mint: Callable[..., dict[str, Any]], client_env: Callable[[str | None], None], upstream: Upstream,
    oidc_issuer: OidcIssuer, broker: str,
) -> None:
    answer = mint("cohere-test")
    client_env(answer["token"])
    body = {"query": "q", "documents": ["a"]}
    with httpx.Client() as client:
        assert client.post(f"{upstream.url}/v2/rerank", json=body).status_code == 200
        revoke = httpx.delete(
            f"{broker}/v1/tokens/{answer['jti']}",
            headers={"Authorization": f"Bearer {oidc_issuer.mint(CI_SUB, CI_CLAIMS)}"},
            timeout=10,
        )
        assert revoke.status_code == 200, revoke.text
        deadline = time.monotonic() + 20
        while True:
            resp = client.post(f"{upstream.url}/v2/rerank", json=body)
            if resp.status_code != 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert (resp.status_code, resp.json()["code"]) == (403, "token_revoked")


def _raw_connect(gateway: Gateway, target: str, token: str) -> tuple[str, bytes]:
    auth = base64.b64encode(f"jit:{token}".encode()).decode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        ask = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Basic {auth}\r\n\r\n"
        sock.sendall(ask.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        fields = dict(line.lower().partition(b":")[::2] for line in head.split(b"\r\n")[1:])
        length = int(fields.get(b"content-length", b"0"))
        while len(body) < length:
            chunk = sock.recv(4096)
            if not chunk:
                break
            body += chunk
    return head.split(b"\r\n", 1)[0].decode(), body


def test_connect_to_an_unrelated_host_is_refused(mint: Callable[..., dict[str, Any]], gateway: Gateway) -> None:
    status, body = _raw_connect(gateway, "example.org:443", _token(mint))
    assert status.split()[1] == "403"
    assert json.loads(body)["code"] == "host_not_allowed"
    ok_status, _ = _raw_connect(gateway, "api.cohere.com:443", _token(mint))
    assert ok_status.split()[1] == "200"


def test_plain_http_proxy_request_with_proxy_credentials(
    mint: Callable[..., dict[str, Any]], gateway: Gateway, upstream: Upstream, real_keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An absolute-form http:// request carries Proxy-Authorization itself; the gateway goes upstream over TLS."""
    token = _token(mint)
    monkeypatch.setenv("HTTP_PROXY", gateway.proxy_url(token))
    mark = len(upstream.received)
    resp = httpx.post("http://api.cohere.com/v2/rerank", json={"query": QUERY, "documents": DOCS})
    assert resp.status_code == 200, resp.text
    assert resp.json()["results"][0]["index"] == 1
    _assert_clean(upstream, mark, token, real_keys["cohere-test"])


def test_documents_over_the_token_limit_are_refused(
    mint: Callable[..., dict[str, Any]], client_env: Callable[[str | None], None], upstream: Upstream,
) -> None:
    client_env(_token(mint))  # the rerank-ci grant allows 1000 documents per call
    mark = len(upstream.received)
    resp = httpx.post(f"{upstream.url}/v2/rerank", json={"query": "q", "documents": ["d"] * 1001})
    assert (resp.status_code, resp.json()["code"]) == (413, "payload_too_large")
    assert _seen_since(upstream, mark) == []


def test_store_token_as_key_header_sees_only_its_fields_and_collection(
    mint: Callable[..., dict[str, Any]], gateway: Gateway, store_front: Relay, chroma_server: ChromaServer,
    real_keys: dict[str, str],
) -> None:
    with httpx.Client(base_url=chroma_server.url, timeout=30, trust_env=False) as direct:
        direct.post(collection_path(), json={"name": "secrets", "get_or_create": True}).raise_for_status()
        candidates = direct.get(f"{collection_path()}/candidates").json()["id"]
    token: str = mint("store-test", sub=READER_SUB)["token"]
    # The token travels as the store's own key header, as CHROMA_API_KEY would; plain HTTP to the
    # store through the gateway (HTTP_PROXY), as chromadb's client goes.
    with httpx.Client(base_url=store_front.url, proxy=gateway.url, timeout=30, trust_env=False,
                      headers={"X-Chroma-Token": token}) as c:
        query = {"query_embeddings": [embedding(SEED[0][1])], "n_results": 1,
                 "include": ["documents", "embeddings", "distances"]}
        mark = len(store_front.sent)
        got = c.post(f"{collection_path()}/{candidates}/query", json=query)
        assert got.status_code == 200, got.text
        assert got.json()["ids"] == [["c1"]] and got.json()["documents"] == [[SEED[0][1]]]
        assert got.json().get("embeddings") is None  # not in the grant's fields
        assert "embeddings" not in (got.json().get("include") or [])
        sent = bytes(store_front.sent[mark:])
        assert real_keys["store-test"].encode() in sent  # the real key reached the store
        assert token.encode() not in sent and token.rsplit(".", 1)[1].encode() not in sent
        mark = len(store_front.sent)
        add = c.post(f"{collection_path()}/{candidates}/add",
                     json={"ids": ["x"], "documents": ["x"], "embeddings": [[0.5] * 8]})
        assert (add.status_code, add.json()["code"]) == (403, "operation_not_allowed")
        other = c.get(f"{collection_path()}/secrets")
        assert (other.status_code, other.json()["code"]) == (403, "collection_not_allowed")
    assert bytes(store_front.sent[mark:]) == b""  # neither refusal reached the store
@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("jitgate_jwks_url", "ftp://broker", "jitgate_jwks_url must be"),
        ("jitgate_revocation_staleness", "1", "must be longer than jitgate_revocation_refresh"),
    ],
)
def test_a_bad_option_stops_mitmdump_with_a_clear_message(
    tmp_path: Path, option: str, value: str, message: str
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(policy_dict("https://oidc.test")))
    options = jitgate_options(policy=policy, jwks_url="http://127.0.0.1:9/.well-known/jwks.json", table="t",
                              aws_endpoint="http://127.0.0.1:9")
    options[option] = value
    with pytest.raises(RuntimeError, match=message):
        start_gateway(tmp_path, options=options, timeout=20)


@pytest.mark.parametrize(
    ("broken", "code"),
    [("table", "revocation_unavailable"), ("jwks", "jwks_unavailable"), ("secret", "credential_unavailable")],
)
def test_fails_closed_when_a_check_cannot_be_made(
    broken: str, code: str, tmp_path: Path, mint: Callable[..., dict[str, Any]], upstream: Upstream,
    oidc_issuer: OidcIssuer, broker: str, aws_stack: Stack, moto_server: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No revocation list, no signing keys, or no upstream secret: 503 with its code, nothing forwarded."""
    doc = policy_dict(oidc_issuer.url, upstreams={"cohere-test": upstream.url})
    if broken == "secret":
        doc["connections"]["cohere-test"]["credential"]["secret_id"] = "jitgate/test/no-such-secret"  # type: ignore[index]
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(doc, sort_keys=False))
    (tmp_path / "ca.pem").write_bytes(upstream.ca_pem())
    options = jitgate_options(
        policy=policy,
        jwks_url="http://127.0.0.1:9/.well-known/jwks.json" if broken == "jwks" else f"{broker}/.well-known/jwks.json",
        table="no-such-table" if broken == "table" else aws_stack.table,
        aws_endpoint=moto_server,
        region=aws_stack.region,
        upstream_ca=tmp_path / "ca.pem",
    )
    if broken == "jwks":
        options["jitgate_issuer"] = broker
    token = _token(mint)
    with start_gateway(tmp_path, options=options) as gw:
        monkeypatch.setenv("HTTPS_PROXY", gw.proxy_url(token))
        monkeypatch.setenv("SSL_CERT_FILE", str(gw.client_bundle(tmp_path / "bundle.pem")))
        mark = len(upstream.received)
        resp = httpx.post(f"{upstream.url}/v2/rerank", json={"query": "q", "documents": ["a"]})
    assert (resp.status_code, resp.json()["code"]) == (503, code)
    assert _seen_since(upstream, mark) == []
