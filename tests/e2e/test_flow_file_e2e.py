"""A real gateway run with `mitmdump -w <file>`: flows go through the full chain, the flow file is
written (mitmproxy deep-copies and tnetstring-dumps each flow's metadata) and reads back, and it
holds neither the JIT token nor the upstream credential."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from mitmproxy import http
from mitmproxy.io import FlowReader

from addon import meta
from jitgate import flow_state
from jitgate.devstack.aws import Stack
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import policy_dict, secret_id
from jitgate.devstack.upstream import Upstream
from tests.e2e.gateway import jitgate_options, start_gateway

DOCS = [
    "Carson City is the capital city of the American state of Nevada.",
    "Washington, D.C. is the capital of the United States.",
    "Capital punishment has existed in the United States since before it was a country.",
]
QUERY = "What is the capital of the United States?"


@pytest.fixture(scope="module")
def real_key(aws_stack: Stack) -> str:
    return aws_stack.secrets[secret_id("cohere-test")]


@pytest.fixture(scope="module")
def upstream(real_key: str) -> Iterator[Upstream]:
    with Upstream(api_keys=[real_key]) as up:
        yield up


def _plain(value: Any) -> bool:
    """Only what tnetstring writes and reads back as itself."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, str | bytes | int | float | bool)


def test_flow_file_of_a_full_chain_run_reads_back_without_secrets(
    tmp_path: Path,
    upstream: Upstream,
    real_key: str,
    oidc_issuer: OidcIssuer,
    broker: str,
    aws_stack: Stack,
    moto_server: str,
    mint: Any,
) -> None:
    doc = policy_dict(oidc_issuer.url, upstreams={"cohere-test": upstream.url})
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(doc, sort_keys=False))
    ca = tmp_path / "upstream-ca.pem"
    ca.write_bytes(upstream.ca_pem())
    options = jitgate_options(
        policy=policy,
        jwks_url=f"{broker}/.well-known/jwks.json",
        table=aws_stack.table,
        aws_endpoint=moto_server,
        region=aws_stack.region,
        upstream_ca=ca,
    )
    options["jitgate_spool_dir"] = str(tmp_path / "spool")
    flows_file = tmp_path / "flows.mitm"
    token: str = mint("cohere-test")["token"]
    body = {"model": "rerank-v3.5", "query": QUERY, "documents": DOCS, "top_n": 2}
    with start_gateway(tmp_path, options=options, extra_args=["-w", str(flows_file)]) as gw:
        bundle = gw.client_bundle(tmp_path / "bundle.pem")
        # Token as proxy credentials, then as the API key; then no token at all (refused, 407).
        with httpx.Client(proxy=gw.proxy_url(token), verify=str(bundle), timeout=20) as client:
            answer = client.post(f"{upstream.url}/v2/rerank", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"][0]["index"] == 1
        with httpx.Client(proxy=gw.url, verify=str(bundle), timeout=20) as client:
            as_key = client.post(f"{upstream.url}/v2/rerank", json=body, headers={"Authorization": f"Bearer {token}"})
            refused = client.post(f"{upstream.url}/v2/rerank", json=body)
        assert as_key.status_code == 200, as_key.text
        assert refused.status_code == 407
        time.sleep(0.2)
        gw.stop()
        assert gw.proc.returncode is not None
        log = "\n".join(gw.log)
    assert "Traceback" not in log and "Error while writing" not in log, log

    raw = flows_file.read_bytes()
    assert token.encode() not in raw
    assert real_key.encode() not in raw
    with flows_file.open("rb") as fh:
        flows = [f for f in FlowReader(fh).stream() if isinstance(f, http.HTTPFlow)]
    statuses = sorted(f.response.status_code for f in flows if f.response is not None)
    assert statuses == [200, 200, 407], statuses
    for f in flows:
        assert _plain(f.metadata), f.metadata
        assert not [k for k in f.metadata if "secret" in k], f.metadata
    jtis = set()
    for f in flows:
        assert f.response is not None
        if f.response.status_code != 200:
            assert meta.state_of(f).claims is None and f.metadata[flow_state.ERROR] == "token_required"
            continue
        claims = meta.state_of(f).claims  # parsed back from the plain form the file holds
        assert claims is not None and claims.conn == "cohere-test"
        jtis.add(claims.jti)
        assert meta.state_of(f).connection_name == "cohere-test"
        assert f.metadata[flow_state.OPERATION] == "rerank" and f.metadata[flow_state.INJECTED] is True
        assert meta.state_of(f).operation == "rerank" and meta.state_of(f).injected is True
        assert b"Washington" in (f.request.content or b"")
        assert f.response.json()["results"][0]["index"] == 1
    assert len(jtis) == 1  # both served flows carry the one minted token's claims
