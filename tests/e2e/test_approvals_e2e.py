"""Approvals and revocation end to end: a moto server, the broker behind its local adapter, an
HTTPS upstream with a private CA, the real Chroma server (store-test, `chroma run`),
`mitmdump -s addon/jitgate_addons.py`, real clients, and the `jitgate approvals` / `jitgate revoke`
commands deciding through the broker's HTTP API."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import brotli
import cohere
import httpx
import pytest
import yaml
from typer.testing import CliRunner

from jitgate.cli import _register, app
from jitgate.devstack.aws import Stack, local_broker
from jitgate.devstack.chroma import ChromaServer, collection_path, embedding
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import (
    ADMIN_GROUP,
    APPROVER_GROUP,
    CI_CLAIMS,
    MAINTAINER_SUB,
    approvers,
    policy_dict,
    secret_id,
)
from jitgate.devstack.upstream import Upstream, bm25
from tests.e2e.background import Background
from tests.e2e.gateway import Gateway, policy_gateway

REPO = Path(__file__).resolve().parents[2]
JITGATE = Path(sys.executable).with_name("jitgate")
CI_SUB = "repo:acme/search-ranker:ref:refs/heads/main"
ONCALL_SUB = "system:serviceaccount:ranking-oncall:pager"
HOLD_TIMEOUT = 10.0  # long enough for a loaded machine to list and decide; the timeout case waits it out
STALENESS = 5.0
EXPIRY = 2  # seconds, the short-lived issuance approval grant
DOCS = [
    "Carson City is the capital city of the American state of Nevada.",
    "Washington, D.C. is the capital of the United States.",
    "Capital punishment has existed in the United States since before it was a country.",
    "The Commonwealth of the Northern Mariana Islands is a group of islands in the Pacific Ocean.",
    "Paris is the capital of France.",
    "Berlin is the capital of Germany.",
]
UPSTREAM_WAIT = 3.0  # jitgate_upstream_timeout of gateway A, seconds
UPSTREAM_TIMEOUT = f"{UPSTREAM_WAIT:g}s"
QUERY = "What is the capital of the United States?"
HOLD_BYTES = 100_000  # cohere-test's approval max_bytes

if not any(g.name == "approvals" for g in app.registered_groups):
    _register()
runner = CliRunner()


@pytest.fixture(scope="module")
def upstream(aws_stack: Stack) -> Iterator[Upstream]:
    keys = [aws_stack.secrets[secret_id(n)] for n in ("cohere-test", "jina-test")]
    with Upstream(api_keys=keys) as up:
        yield up


@pytest.fixture(scope="module")
def policy_file(
    tmp_path_factory: pytest.TempPathFactory, oidc_issuer: OidcIssuer, upstream: Upstream, chroma_server: ChromaServer
) -> Path:
    """One file for this module's broker and gateway: the dev policy, pointed at the local
    upstream and the real Chroma, with a 2-of-M issuance grant, a 2-second one, and reranks of > 5
    documents or of more than HOLD_BYTES (decoded) held."""
    doc: Any = policy_dict(
        oidc_issuer.url,
        upstreams={
            "cohere-test": upstream.url,
            "jina-test": "https://jina.upstream.test",
            "store-test": chroma_server.url,
        },
    )
    # approvers: the policy's admins
    doc["connections"]["cohere-test"]["approval"] = {"max_documents": 5, "max_bytes": HOLD_BYTES}
    doc["connections"]["store-test"]["approval"]["approvers"] = approvers(oidc_issuer.url, APPROVER_GROUP)
    grants = {g["name"]: g for g in doc["grants"]}
    grants["store-maintenance"]["approval"]["approvers"]["count"] = 2
    short = json.loads(json.dumps(grants["store-maintenance"]))
    short.update(name="store-oncall")
    short["match"]["claims"] = {"sub": ["system:serviceaccount:ranking-oncall:*"]}
    short["approval"] = {"required": True, "approvers": approvers(oidc_issuer.url, APPROVER_GROUP),
                      "timeout": f"{EXPIRY}s"}
    doc["grants"].append(short)
    path = tmp_path_factory.mktemp("approvals") / "policy.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def broker(aws_stack: Stack, policy_file: Path) -> Iterator[str]:
    with local_broker(aws_stack, policy_file, cwd=REPO) as proc:
        yield proc.url


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: Upstream, broker: str, aws_stack: Stack, moto_server: str,
    policy_file: Path,
) -> Iterator[Gateway]:
    with policy_gateway(
        tmp_path_factory.mktemp("approvals-gateway"), upstream=upstream, broker=broker, stack=aws_stack,
        moto_server=moto_server, policy=policy_file, revocation_staleness=STALENESS,
        jitgate_approval_timeout=str(HOLD_TIMEOUT), jitgate_approval_poll="0.2", jitgate_gateway_id="gw-a",
        jitgate_upstream_timeout=UPSTREAM_TIMEOUT,
    ) as gw:
        yield gw
        if gw.proc.poll() is not None:
            pytest.fail("the gateway died:\n" + "\n".join(gw.log))


@pytest.fixture(scope="module")
def second_gateway(
    tmp_path_factory: pytest.TempPathFactory, gateway: Gateway, upstream: Upstream, broker: str, aws_stack: Stack,
    moto_server: str, policy_file: Path,
) -> Iterator[Gateway]:
    """Another gateway instance on the same table (its own process, CA and poller)."""
    with policy_gateway(
        tmp_path_factory.mktemp("approvals-gateway-b"), upstream=upstream, broker=broker, stack=aws_stack,
        moto_server=moto_server, policy=policy_file, revocation_staleness=STALENESS,
        jitgate_approval_timeout=str(HOLD_TIMEOUT * 3), jitgate_approval_poll="0.2", jitgate_gateway_id="gw-b",
    ) as gw:
        yield gw


@pytest.fixture(scope="module")
def bundle(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gateway.client_bundle(tmp_path_factory.mktemp("client") / "bundle.pem")


# -- helpers ------------------------------------------------------------------------------------


def _oidc(issuer: OidcIssuer, sub: str, *groups: str, **claims: Any) -> str:
    return issuer.mint(sub, {"groups": list(groups), **claims} if groups else (claims or None))


def _request_token(broker: str, oidc: str, connection: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{broker}/v1/tokens", json={"connection": connection, **body},
                      headers={"Authorization": f"Bearer {oidc}"}, timeout=10)


def _ci_token(broker: str, issuer: OidcIssuer) -> dict[str, Any]:
    resp = _request_token(broker, _oidc(issuer, CI_SUB, **CI_CLAIMS), "cohere-test")
    assert resp.status_code == 201, resp.text
    answer: dict[str, Any] = resp.json()
    return answer


def _approval(broker: str, oidc: str, approval_id: str) -> dict[str, Any]:
    resp = httpx.get(f"{broker}/v1/approvals/{approval_id}", headers={"Authorization": f"Bearer {oidc}"}, timeout=10)
    assert resp.status_code == 200, resp.text
    answer: dict[str, Any] = resp.json()
    return answer


def _cli(broker: str, oidc: str, *args: str) -> Any:
    return runner.invoke(app, [*args, "--broker", broker, "--oidc-token", oidc])


def _wait_for_hold(broker: str, approver: str, jti: str) -> dict[str, Any]:
    """The pending hold of the token `jti`, as `jitgate approvals list --json` shows it to `approver`."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = _cli(broker, approver, "approvals", "list", "--json")
        assert result.exit_code == 0, result.output
        for item in json.loads(result.stdout):
            if item["kind"] == "hold" and item["summary"]["jti"] == jti:
                return dict(item)
        time.sleep(0.2)
    raise AssertionError("the hold never showed up")


def _candidates(chroma: ChromaServer) -> str:
    """The path of `candidates` on the real Chroma (v2 API: the collection's id in the path)."""
    with httpx.Client(base_url=chroma.url, timeout=30, trust_env=False) as direct:
        return f"{collection_path()}/{direct.get(f'{collection_path()}/candidates').json()['id']}"


def _store_client(gateway: Gateway, chroma: ChromaServer, token: str) -> httpx.Client:
    """Plain HTTP to Chroma through the gateway (HTTP_PROXY), the token as the proxy credentials."""
    return httpx.Client(base_url=chroma.url, proxy=gateway.proxy_url(token), timeout=60, trust_env=False)


def _direct_delete(chroma: ChromaServer, record: str) -> None:
    with httpx.Client(base_url=chroma.url, timeout=30, trust_env=False) as direct:
        direct.post(f"{_candidates(chroma)}/delete", json={"ids": [record]}).raise_for_status()


def _rerank(gateway: Gateway, bundle: Path, upstream: Upstream, token: str, docs: list[str]) -> httpx.Response:
    with httpx.Client(proxy=gateway.proxy_url(token), verify=str(bundle), timeout=60) as client:
        return client.post(f"{upstream.url}/v2/rerank", json={"model": "rerank-v3.5", "query": QUERY,
                                                               "documents": docs})


# -- issuance approvals -------------------------------------------------------------------------


def test_issuance_two_of_m_via_cli_then_collected_token_works_through_the_gateway(
    broker: str, oidc_issuer: OidcIssuer, gateway: Gateway, chroma_server: ChromaServer
) -> None:
    requester = _oidc(oidc_issuer, MAINTAINER_SUB)
    resp = _request_token(broker, requester, "store-test", job="reindex-7")
    assert resp.status_code == 202 and "token" not in resp.json()
    approval_id = resp.json()["approval_id"]

    lead_a, lead_b = _oidc(oidc_issuer, "lead-a", APPROVER_GROUP), _oidc(oidc_issuer, "lead-b", APPROVER_GROUP)
    listed = _cli(broker, lead_a, "approvals", "list")
    assert listed.exit_code == 0 and approval_id in listed.stdout and "reindex-7" in listed.stdout
    first = _cli(broker, lead_a, "approvals", "approve", approval_id, "--reason", "planned reindex")
    assert first.exit_code == 0 and first.stdout.strip() == "pending"
    assert "token" not in _approval(broker, requester, approval_id)
    second = _cli(broker, lead_b, "approvals", "approve", approval_id, "--reason", "ok")
    assert second.exit_code == 0 and second.stdout.strip() == "approved"

    approved_at = int(time.time())
    collected = _approval(broker, _oidc(oidc_issuer, MAINTAINER_SUB), approval_id)
    assert collected["state"] == "approved" and collected["token"].startswith("eyJ")
    assert collected["expires_at"] - collected["ttl"] >= approved_at  # the TTL started at collection
    assert "token" not in _approval(broker, _oidc(oidc_issuer, MAINTAINER_SUB), approval_id)  # handed out once

    store, record = _candidates(chroma_server), "d-" + uuid.uuid4().hex[:8]
    text = f"{DOCS[1]} (reindexed as {record})"
    try:
        with _store_client(gateway, chroma_server, collected["token"]) as client:
            added = client.post(f"{store}/add", json={"ids": [record], "documents": [text],
                                                      "embeddings": [embedding(text)]})
            found = client.post(f"{store}/query", json={"query_embeddings": [embedding(text)], "n_results": 1,
                                                         "include": ["documents", "distances"]})
    finally:
        _direct_delete(chroma_server, record)
    assert added.status_code in (200, 201), added.text
    assert found.status_code == 200 and found.json()["ids"] == [[record]], found.text


def test_jitgate_token_waits_for_the_approval_and_prints_the_collected_token(
    broker: str, oidc_issuer: OidcIssuer
) -> None:
    requester = _oidc(oidc_issuer, MAINTAINER_SUB)
    proc = subprocess.Popen(
        [str(JITGATE), "token", "--broker", broker, "--connection", "store-test", "--oidc-token", requester,
         "--wait-approval", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lead_a, lead_b = _oidc(oidc_issuer, "lead-a", APPROVER_GROUP), _oidc(oidc_issuer, "lead-b", APPROVER_GROUP)
        deadline = time.monotonic() + 30
        pending: list[str] = []
        while not pending and time.monotonic() < deadline:
            listed = json.loads(_cli(broker, lead_a, "approvals", "list", "--json").stdout)
            pending = [a["id"] for a in listed if a["kind"] == "issuance" and a["requester"] == MAINTAINER_SUB]
            time.sleep(0.2)
        assert pending, "the request never showed up"
        for lead in (lead_a, lead_b):
            for approval_id in pending:
                _cli(broker, lead, "approvals", "approve", approval_id, "--reason", "ok")
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.strip().startswith("eyJ") and out.count(".") == 2
    assert "needs approval" in err


def test_issuance_denied_via_cli(broker: str, oidc_issuer: OidcIssuer) -> None:
    requester = _oidc(oidc_issuer, MAINTAINER_SUB)
    approval_id = _request_token(broker, requester, "store-test").json()["approval_id"]
    lead = _oidc(oidc_issuer, "lead-a", APPROVER_GROUP)
    assert _cli(broker, lead, "approvals", "approve", approval_id, "--reason", "ok").stdout.strip() == "pending"
    denied = _cli(broker, _oidc(oidc_issuer, "lead-b", APPROVER_GROUP), "approvals", "deny", approval_id,
                  "--reason", "not during the freeze")
    assert denied.exit_code == 0 and denied.stdout.strip() == "denied"
    view = _approval(broker, requester, approval_id)
    assert view["state"] == "denied" and "token" not in view
    late = _cli(broker, _oidc(oidc_issuer, "lead-c", APPROVER_GROUP), "approvals", "approve", approval_id,
                "--reason", "late")
    assert late.exit_code == 2 and "approval_closed" in late.output


def test_self_approval_is_refused(broker: str, oidc_issuer: OidcIssuer) -> None:
    requester = _oidc(oidc_issuer, MAINTAINER_SUB, APPROVER_GROUP)  # in the approver group, still the requester
    approval_id = _request_token(broker, requester, "store-test").json()["approval_id"]
    result = _cli(broker, requester, "approvals", "approve", approval_id, "--reason", "mine")
    assert result.exit_code == 2 and "self_approval" in result.output
    assert _approval(broker, requester, approval_id)["votes"] == []


def test_pending_issuance_expires(broker: str, oidc_issuer: OidcIssuer) -> None:
    requester = _oidc(oidc_issuer, ONCALL_SUB)
    resp = _request_token(broker, requester, "store-test")
    assert resp.status_code == 202
    approval_id, expires_at = resp.json()["approval_id"], resp.json()["expires_at"]
    while time.time() < expires_at + 0.5:
        time.sleep(0.2)
    view = _approval(broker, requester, approval_id)
    assert view["state"] == "expired" and "token" not in view
    late = _cli(broker, _oidc(oidc_issuer, "lead-a", APPROVER_GROUP), "approvals", "approve", approval_id,
                "--reason", "too late")
    assert late.exit_code == 2 and "approval_expired" in late.output


# -- holds on the data path ---------------------------------------------------------------------


def test_held_rerank_resumes_after_approval_and_the_client_gets_the_upstream_answer(
    broker: str, oidc_issuer: OidcIssuer, gateway: Gateway, bundle: Path, upstream: Upstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    minted = _ci_token(broker, oidc_issuer)
    monkeypatch.setenv("HTTPS_PROXY", gateway.proxy_url(minted["token"]))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setenv("NO_PROXY", "")
    co = cohere.ClientV2(api_key="placeholder-not-a-key", base_url=upstream.url, max_retries=0, timeout=60)
    mark = len(upstream.received)
    call = Background(lambda: co.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=3))

    admin = _oidc(oidc_issuer, "sec-oncall", ADMIN_GROUP)
    hold = _wait_for_hold(broker, admin, minted["jti"])
    summary = hold["summary"]
    assert summary["documents"] == len(DOCS) and summary["operation"] == "rerank"
    assert summary["reasons"] == [f"documents:{len(DOCS)}>5"] and summary["path"] == "/v2/rerank"
    assert minted["token"] not in json.dumps(hold) and DOCS[1] not in json.dumps(hold)
    assert call.running() and len(upstream.received) == mark  # held: nothing went upstream
    time.sleep(UPSTREAM_WAIT + 0.5)  # held past jitgate_upstream_timeout: a hold is no wait for the upstream
    assert call.running()

    assert _cli(broker, admin, "approvals", "approve", hold["id"], "--reason", "big batch ok").exit_code == 0
    answer = call.result()
    scores = bm25(QUERY, DOCS)
    assert [r.index for r in answer.results] == sorted(range(len(DOCS)), key=lambda i: (-scores[i], i))[:3]
    assert len(upstream.received) == mark + 1


def test_held_rerank_denied_is_403(
    broker: str, oidc_issuer: OidcIssuer, gateway: Gateway, bundle: Path, upstream: Upstream
) -> None:
    minted = _ci_token(broker, oidc_issuer)
    mark = len(upstream.received)
    call = Background(lambda: _rerank(gateway, bundle, upstream, minted["token"], DOCS))
    admin = _oidc(oidc_issuer, "sec-oncall", ADMIN_GROUP)
    hold = _wait_for_hold(broker, admin, minted["jti"])
    assert _cli(broker, admin, "approvals", "deny", hold["id"], "--reason", "unexpected volume").exit_code == 0
    resp = call.result()
    assert resp.status_code == 403
    assert resp.json()["code"] == "approval_denied" and resp.json()["approval_id"] == hold["id"]
    assert len(upstream.received) == mark


def test_held_rerank_times_out_with_403(
    broker: str, oidc_issuer: OidcIssuer, gateway: Gateway, bundle: Path, upstream: Upstream
) -> None:
    minted = _ci_token(broker, oidc_issuer)
    mark = len(upstream.received)
    resp = _rerank(gateway, bundle, upstream, minted["token"], DOCS)
    assert resp.status_code == 403 and resp.json()["code"] == "approval_timeout"
    assert len(upstream.received) == mark
    admin = _oidc(oidc_issuer, "sec-oncall", ADMIN_GROUP)
    late = _cli(broker, admin, "approvals", "approve", resp.json()["approval_id"], "--reason", "late")
    assert late.exit_code == 2 and "approval_expired" in late.output


@pytest.mark.parametrize("encoding", ["gzip", "br"])
def test_big_rerank_sent_compressed_is_held_on_its_decoded_size(
    broker: str, oidc_issuer: OidcIssuer, gateway: Gateway, bundle: Path, upstream: Upstream, encoding: str
) -> None:
    minted = _ci_token(broker, oidc_issuer)
    docs = [" ".join([d] * 1600) for d in DOCS[:3]]  # 3 documents (no document rule), ~300 kB
    plain = json.dumps({"model": "rerank-v3.5", "query": QUERY, "documents": docs}).encode()
    packed = gzip.compress(plain) if encoding == "gzip" else brotli.compress(plain)
    assert len(plain) > 3 * HOLD_BYTES and len(packed) < HOLD_BYTES // 10
    mark = len(upstream.received)

    def send() -> httpx.Response:
        with httpx.Client(proxy=gateway.proxy_url(minted["token"]), verify=str(bundle), timeout=60) as client:
            return client.post(f"{upstream.url}/v2/rerank", content=packed,
                               headers={"Content-Type": "application/json", "Content-Encoding": encoding})

    call = Background(send)
    admin = _oidc(oidc_issuer, "sec-oncall", ADMIN_GROUP)
    hold = _wait_for_hold(broker, admin, minted["jti"])
    assert hold["summary"]["bytes"] == len(plain)
    assert hold["summary"]["reasons"] == [f"bytes:{len(plain)}>{HOLD_BYTES}"]
    assert call.running() and len(upstream.received) == mark  # held: nothing went upstream
    assert _cli(broker, admin, "approvals", "deny", hold["id"], "--reason", "too big").exit_code == 0
    resp = call.result()
    assert resp.status_code == 403 and resp.json()["code"] == "approval_denied"
    assert len(upstream.received) == mark


def test_other_flows_pass_while_one_is_held(
    broker: str, oidc_issuer: OidcIssuer, gateway: Gateway, bundle: Path, upstream: Upstream
) -> None:
    held_token, other_token = _ci_token(broker, oidc_issuer), _ci_token(broker, oidc_issuer)
    call = Background(lambda: _rerank(gateway, bundle, upstream, held_token["token"], DOCS))
    admin = _oidc(oidc_issuer, "sec-oncall", ADMIN_GROUP)
    hold = _wait_for_hold(broker, admin, held_token["jti"])
    for token in (other_token["token"], held_token["token"]):  # even the held token's own small calls pass
        resp = _rerank(gateway, bundle, upstream, token, DOCS[:3])
        assert resp.status_code == 200 and resp.json()["results"][0]["index"] == 1
    assert call.running()
    _cli(broker, admin, "approvals", "deny", hold["id"], "--reason", "cleanup")
    assert call.result().status_code == 403


def test_holds_on_two_gateways_sharing_the_table(
    broker: str, oidc_issuer: OidcIssuer, gateway: Gateway, second_gateway: Gateway, bundle: Path,
    upstream: Upstream, tmp_path: Path,
) -> None:
    bundle_b = second_gateway.client_bundle(tmp_path / "bundle-b.pem")
    on_a, on_b = _ci_token(broker, oidc_issuer), _ci_token(broker, oidc_issuer)
    call_a = Background(lambda: _rerank(gateway, bundle, upstream, on_a["token"], DOCS))
    call_b = Background(lambda: _rerank(second_gateway, bundle_b, upstream, on_b["token"], DOCS))
    admin = _oidc(oidc_issuer, "sec-oncall", ADMIN_GROUP)
    hold_a, hold_b = _wait_for_hold(broker, admin, on_a["jti"]), _wait_for_hold(broker, admin, on_b["jti"])
    assert (hold_a["summary"]["gateway"], hold_b["summary"]["gateway"]) == ("gw-a", "gw-b")
    assert _cli(broker, admin, "approvals", "approve", hold_b["id"], "--reason", "ok").exit_code == 0
    assert call_b.result().status_code == 200  # gateway B resumed its own hold
    assert call_a.running()  # gateway A's hold is untouched by B's decision
    assert _cli(broker, admin, "approvals", "deny", hold_a["id"], "--reason", "no").exit_code == 0
    assert call_a.result().json()["code"] == "approval_denied"


def test_store_delete_is_held_for_the_connections_approvers(
    broker: str, oidc_issuer: OidcIssuer, gateway: Gateway, chroma_server: ChromaServer
) -> None:
    """A named operation (delete) on the store: held, and only the connection's approvers decide."""
    requester = _oidc(oidc_issuer, MAINTAINER_SUB)
    approval_id = _request_token(broker, requester, "store-test").json()["approval_id"]
    for lead in ("lead-a", "lead-b"):
        _cli(broker, _oidc(oidc_issuer, lead, APPROVER_GROUP), "approvals", "approve", approval_id, "--reason", "ok")
    minted = _approval(broker, _oidc(oidc_issuer, MAINTAINER_SUB), approval_id)
    store, gone = _candidates(chroma_server), "gone-" + uuid.uuid4().hex[:8]

    def delete() -> httpx.Response:
        with _store_client(gateway, chroma_server, minted["token"]) as client:
            client.post(f"{store}/add", json={"ids": [gone], "documents": ["obsolete"],
                                              "embeddings": [embedding("obsolete")]}).raise_for_status()
            return client.post(f"{store}/delete", json={"ids": [gone]})

    try:
        call = Background(delete)
        lead = _oidc(oidc_issuer, "lead-c", APPROVER_GROUP)
        hold = _wait_for_hold(broker, lead, minted["jti"])
        assert hold["summary"]["reasons"] == ["operation:delete"]
        admin = _oidc(oidc_issuer, "sec-oncall", ADMIN_GROUP)
        refused = _cli(broker, admin, "approvals", "approve", hold["id"], "--reason", "admin")
        assert refused.exit_code == 2 and "not_an_approver" in refused.output
        assert _cli(broker, lead, "approvals", "approve", hold["id"], "--reason", "cleanup ticket 12").exit_code == 0
        resp = call.result()
        assert resp.status_code == 200, resp.text
        with httpx.Client(base_url=chroma_server.url, timeout=30, trust_env=False) as direct:
            assert direct.post(f"{store}/get", json={"ids": [gone]}).json()["ids"] == []  # Chroma deleted it
    finally:
        _direct_delete(chroma_server, gone)


# -- revocation ---------------------------------------------------------------------------------


def test_revoked_token_is_refused_within_the_bound_on_a_connection_that_stayed_open(
    broker: str, oidc_issuer: OidcIssuer, gateway: Gateway, bundle: Path, upstream: Upstream
) -> None:
    minted = _ci_token(broker, oidc_issuer)
    ctx = ssl.create_default_context(cafile=str(bundle))
    conn = http.client.HTTPSConnection("127.0.0.1", gateway.port, context=ctx, timeout=30)
    auth = base64.b64encode(f"jit:{minted['token']}".encode()).decode()
    conn.set_tunnel("127.0.0.1", upstream.port, headers={"Proxy-Authorization": f"Basic {auth}"})
    body = json.dumps({"model": "rerank-v3.5", "query": QUERY, "documents": DOCS[:2]})

    def call() -> tuple[int, Any]:
        conn.request("POST", "/v2/rerank", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())

    status, _ = call()
    assert status == 200
    sock = conn.sock
    assert sock is not None

    owner = _oidc(oidc_issuer, CI_SUB, **CI_CLAIMS)
    revoked = runner.invoke(app, ["revoke", "--broker", broker, "--oidc-token", owner, minted["jti"]])
    assert revoked.exit_code == 0, revoked.output
    revoked_at = time.monotonic()
    answer: Any = None
    while time.monotonic() - revoked_at < STALENESS + 3:
        status, answer = call()
        assert conn.sock is sock, "the client reconnected; the test needs the same connection"
        if status != 200:
            break
        time.sleep(0.2)
    elapsed = time.monotonic() - revoked_at
    assert status == 403 and answer["code"] == "token_revoked", (status, answer)
    assert elapsed <= STALENESS + 3
    conn.close()
