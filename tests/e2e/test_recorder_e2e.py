"""Recording end to end: rerank calls through the real gateway chain → records in the moto
bucket → `jitgate audit` (DuckDB) names the right user, token and document fingerprints."""

from __future__ import annotations

import gzip
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import cohere
import httpx
import pytest
import yaml
from typer.testing import CliRunner

from jitgate.cli import _register, app
from jitgate.devstack.aws import Stack
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import policy_dict, secret_id
from jitgate.devstack.upstream import Upstream
from tests.e2e.gateway import Gateway, jitgate_options, start_gateway

RANKER = "repo:acme/search-ranker:ref:refs/heads/main"
INDEXER = "repo:acme/search-indexer:ref:refs/heads/main"
SHARED = "Washington, D.C. is the capital of the United States."
ONLY_RANKER = "Carson City is the capital city of the American state of Nevada."
ONLY_INDEXER = "The Commonwealth of the Northern Mariana Islands is a group of islands in the Pacific Ocean."
GATEWAY_ID = "gw-e2e-recorder"
# Made at run time, never committed: a well-formed fake AWS key id and a mailbox.
FAKE_KEY = "AKIA" + "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))
EMAIL = f"jane.{secrets.token_hex(3)}@example.org"

_register()
runner = CliRunner()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def upstream(aws_stack: Stack) -> Iterator[Upstream]:
    with Upstream(api_keys=[aws_stack.secrets[secret_id("cohere-test")]]) as up:
        yield up


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    upstream: Upstream,
    oidc_issuer: OidcIssuer,
    broker: str,
    aws_stack: Stack,
    moto_server: str,
) -> Iterator[Gateway]:
    work = tmp_path_factory.mktemp("recorder-gateway")
    policy = work / "policy.yaml"
    policy.write_text(yaml.safe_dump(policy_dict(oidc_issuer.url, upstreams={"cohere-test": upstream.url})))
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
    options |= {
        "jitgate_bucket": aws_stack.bucket,
        "jitgate_spool_dir": str(work / "spool"),
        "jitgate_gateway_id": GATEWAY_ID,
        "jitgate_segment_ms": "200",
    }
    with start_gateway(work, options=options) as gw:
        yield gw


def _session_objects(bucket: str) -> list[bytes]:
    s3 = boto3.client("s3")
    bodies = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="sessions/"):
        for obj in page.get("Contents", []):
            if f"/{GATEWAY_ID}-" in obj["Key"]:
                bodies.append(gzip.decompress(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()))
    return bodies


def _audit_json(*args: str, cache: Path, bucket: str, endpoint: str) -> list[dict[str, Any]]:
    res = runner.invoke(
        app, ["audit", *args, "--bucket", bucket, "--endpoint-url", endpoint, "--cache", str(cache), "--format", "json"]
    )
    assert res.exit_code == 0, res.output
    return [json.loads(line) for line in res.output.splitlines() if line.startswith("{")]


def test_rerank_calls_are_answerable_from_the_bucket(
    gateway: Gateway,
    upstream: Upstream,
    mint: Callable[..., dict[str, Any]],
    aws_stack: Stack,
    moto_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bundle = gateway.client_bundle(tmp_path / "bundle.pem")
    ranker = mint("cohere-test", sub=RANKER, job="nightly-rank")
    indexer = mint("cohere-test", sub=INDEXER, claims={"repository": "acme/search-indexer"})
    real_key = aws_stack.secrets[secret_id("cohere-test")]

    # the ranker: the cohere SDK, token as proxy credentials
    monkeypatch.setenv("HTTPS_PROXY", gateway.proxy_url(ranker["token"]))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setenv("NO_PROXY", "")
    co = cohere.ClientV2(api_key="placeholder", base_url=upstream.url, max_retries=0)
    answer = co.rerank(model="rerank-v3.5", query="capital of the United States", documents=[ONLY_RANKER, SHARED])
    assert answer.results[0].index == 1
    # the indexer: httpx, token as the API key, Cohere v1
    with httpx.Client(proxy=gateway.url, verify=str(bundle)) as c:
        resp = c.post(
            f"{upstream.url}/v1/rerank",
            json={"query": "islands in the Pacific", "documents": [SHARED, ONLY_INDEXER]},
            headers={"Authorization": f"Bearer {indexer['token']}"},
        )
        assert resp.status_code == 200
        refused = c.post(f"{upstream.url}/v2/rerank", json={"query": "q", "documents": [SHARED]})
        assert refused.status_code == 407
        # a document carrying a credential is blocked by leak_guard; PII in the query is masked
        leaky = c.post(
            f"{upstream.url}/v1/rerank",
            json={"query": "keys", "documents": [f"deploy with {FAKE_KEY}", SHARED]},
            headers={"Authorization": f"Bearer {indexer['token']}"},
        )
        assert leaky.status_code == 403 and leaky.json()["code"] == "leak_blocked"
        masked = c.post(
            f"{upstream.url}/v1/rerank",
            json={"query": f"orders of {EMAIL}", "documents": [ONLY_INDEXER]},
            headers={"Authorization": f"Bearer {indexer['token']}"},
        )
        assert masked.status_code == 200

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum(b.count(b"\n") for b in _session_objects(aws_stack.bucket)) < 5:
        time.sleep(0.3)
    raw = b"".join(_session_objects(aws_stack.bucket))
    for secret in (ranker["token"], indexer["token"], real_key, FAKE_KEY, EMAIL):
        assert secret.encode() not in raw  # no JIT token, injected credential, blocked secret or masked PII

    cache = tmp_path / "cache"
    audit = dict(cache=cache, bucket=aws_stack.bucket, endpoint=moto_server)
    rows = _audit_json("who-reranked", ONLY_RANKER, **audit)
    assert [(r["sub"], r["jti"], r["job"], r["doc_index"]) for r in rows] == [
        (RANKER, ranker["jti"], "nightly-rank", 0)
    ]
    rows = _audit_json("who-reranked", _sha(SHARED), **audit)
    # attempts count too: the blocked one is listed with its decision, it never reached the model
    assert sorted((r["sub"], r["jti"], r["doc_index"], r["decision"]) for r in rows) == sorted(
        [
            (RANKER, ranker["jti"], 1, "allowed"),
            (INDEXER, indexer["jti"], 0, "allowed"),
            (INDEXER, indexer["jti"], 1, "blocked"),
        ]
    )
    (rec,) = _audit_json(
        "sql",
        f"SELECT * FROM sessions_unique WHERE jti = '{indexer['jti']}' AND status = 200 AND doc_count = 2",
        **audit,
    )
    assert rec["doc_sha256"] == [_sha(SHARED), _sha(ONLY_INDEXER)]
    assert rec["ranking"][0]["index"] == 1 and rec["path"] == "/v1/rerank" and rec["gateway"] == GATEWAY_ID
    assert rec["rerank_query"] == "islands in the Pacific" and rec["decision"] == "allowed"
    blocked = _audit_json("sql", "SELECT status, error, jti FROM sessions_unique WHERE status = 407", **audit)
    assert {"status": 407, "error": "token_required", "jti": None} in blocked

    leaks = {
        (r["finding"], r["action"], r["status"])
        for r in _audit_json("blocked-leaks", **audit)
        if r["jti"] == indexer["jti"]
    }
    assert ("aws_access_key_id", "block", 403) in leaks and ("email", "mask", 200) in leaks
    (pii,) = _audit_json(
        "sql", "SELECT rerank_query FROM sessions_unique WHERE rerank_query LIKE 'orders of %'", **audit
    )
    assert pii["rerank_query"].startswith("orders of [REDACTED:email:")

    used = {r["jti"]: r["requests"] for r in _audit_json("tokens-issued-vs-used", **audit)}
    assert used.get(ranker["jti"]) == 1 and used.get(indexer["jti"]) == 3
    # The other named queries, each the text Athena runs (its 30- or 7-day window), on these records.
    activity = {r["sub"]: r for r in _audit_json("user-activity", **audit)}
    assert activity[RANKER]["reranks"] >= 1 and activity[RANKER]["documents"] >= 2
    assert activity[INDEXER]["blocked"] >= 1 and activity[INDEXER]["tokens"] >= 1
    by_subject = _audit_json("tokens-by-subject", **audit)
    issued = {(r["sub"], r["conn"]): r["n"] for r in by_subject if r["event_type"] == "issued"}
    assert issued[(RANKER, "cohere-test")] >= 1 and issued[(INDEXER, "cohere-test")] >= 1
    held = _audit_json("held-operations", **audit)  # none here; other tests' holds may share the bucket
    assert all(r["decision"] in ("held", "approved", "denied") or r["apv"] for r in held)

    out = tmp_path / "flows.mitm"
    res = runner.invoke(
        app, ["sessions", "export", "--jti", ranker["jti"], "-o", str(out), "--no-sync", "--cache", str(cache)]
    )
    assert res.exit_code == 0, res.output
    from mitmproxy import io

    with out.open("rb") as fh:
        (flow,) = io.FlowReader(fh).stream()
    assert flow.request.path == "/v2/rerank" and flow.response.status_code == 200
    assert flow.metadata["jitgate"]["sub"] == RANKER
