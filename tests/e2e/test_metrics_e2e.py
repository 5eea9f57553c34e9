"""/metrics, /healthz and /readyz of a real gateway (mitmdump with the whole chain, moto, the broker)."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jitgate.devstack.aws import Stack
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.upstream import Upstream
from tests.e2e.gateway import Gateway
from tests.inspect import corpus
from tests.reliability.harness import client, full_gateway, rerank, write_policy


@pytest.fixture(scope="module")
def upstream(aws_stack: Stack) -> Iterator[Upstream]:
    with Upstream(api_keys=aws_stack.secrets.values()) as up:
        yield up


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory, oidc_issuer: OidcIssuer, upstream: Upstream) -> Path:
    return write_policy(tmp_path_factory.mktemp("metrics-policy"), oidc_issuer.url, upstream)


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, policy: Path, upstream: Upstream, broker: str, aws_stack: Stack,
    moto_server: str,
) -> Iterator[Gateway]:
    work = tmp_path_factory.mktemp("metrics-gw")
    with full_gateway(
        work, policy=policy, upstream=upstream, broker=broker, stack=aws_stack, moto=moto_server,
        gateway_id="metrics", jitgate_metrics_port="0", jitgate_bucket="",  # the e2e bucket is other tests' audit
    ) as gw:
        yield gw


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample `name` whose labels include `labels` (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def _metrics(gw: Gateway) -> str:
    return httpx.get(gw.metrics_url() + "/metrics", timeout=10).text


def _wait_ready(gw: Gateway) -> httpx.Response:
    deadline = time.monotonic() + 20
    while True:
        resp = httpx.get(gw.metrics_url() + "/readyz", timeout=10)
        if resp.status_code == 200 or time.monotonic() > deadline:
            return resp
        time.sleep(0.2)


def test_alive_and_ready_with_every_check(gateway: Gateway) -> None:
    assert httpx.get(gateway.metrics_url() + "/healthz", timeout=10).status_code == 200
    resp = _wait_ready(gateway)
    assert resp.status_code == 200, resp.text + "\n".join(gateway.log)
    assert resp.json() == {
        "ready": True, "checks": {"jwks_loaded": True, "revocations_fresh": True, "spool_writable": True},
        "policy_current": True,
    }
    text = _metrics(gateway)
    assert _sample(text, "jitgate_ready", check="revocations_fresh") == 1
    assert 0 <= _sample(text, "jitgate_revocation_list_age_seconds") <= 3
    assert "jitgate_spool_backlog_bytes" in text and "jitgate_held_requests" in text


def test_a_refused_request_moves_its_counter(gateway: Gateway, upstream: Upstream, tmp_path: Path) -> None:
    bundle = gateway.client_bundle(tmp_path / "bundle.pem")
    labels = {"code": "token_required", "decision": "blocked"}
    before = _sample(_metrics(gateway), "jitgate_requests_total", **labels)
    with client(gateway, bundle, None) as c:
        assert rerank(c, upstream).status_code == 407
    assert _sample(_metrics(gateway), "jitgate_requests_total", **labels) == before + 1


def test_an_allowed_request_and_a_finding_move_their_counters(
    gateway: Gateway, upstream: Upstream, tmp_path: Path, mint: Callable[..., dict[str, Any]]
) -> None:
    bundle = gateway.client_bundle(tmp_path / "bundle.pem")
    token = mint("cohere-test")["token"]
    secret = corpus.PREFIXED["github_pat"](random.Random())
    text = _metrics(gateway)
    ok = {"connection": "cohere-test", "operation": "rerank", "decision": "allowed", "status": "2xx"}
    ok_before = _sample(text, "jitgate_requests_total", **ok)
    found_before = _sample(text, "jitgate_findings_total")
    with client(gateway, bundle, token) as c:
        assert rerank(c, upstream).status_code == 200
        blocked = c.post(
            f"{upstream.url}/v2/rerank", json={"model": "rerank-v3.5", "query": "q", "documents": [f"key {secret}"]},
        )
    assert blocked.status_code == 403, blocked.text
    text = _metrics(gateway)
    assert _sample(text, "jitgate_requests_total", **ok) == ok_before + 1
    assert _sample(text, "jitgate_findings_total") > found_before
    assert _sample(text, "jitgate_gateway_added_seconds_count", path="forwarded") >= 1
    assert secret not in text and token not in text and "/v2/rerank" not in text


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_dynamodb_makes_readyz_fail(
    tmp_path: Path, policy: Path, upstream: Upstream, broker: str, aws_stack: Stack, moto_server: str
) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}"
    aws_env = {"AWS_ENDPOINT_URL": moto_server, "AWS_ENDPOINT_URL_DYNAMODB": dead}
    with full_gateway(
        tmp_path, policy=policy, upstream=upstream, broker=broker, stack=aws_stack, moto=moto_server,
        gateway_id="metrics-stale", aws_env=aws_env, jitgate_metrics_port="0", jitgate_bucket="",
    ) as gw:
        url = gw.metrics_url()
        assert httpx.get(url + "/healthz", timeout=10).status_code == 200
        resp = httpx.get(url + "/readyz", timeout=10)
        assert resp.status_code == 503, resp.text
        assert resp.json()["checks"]["revocations_fresh"] is False
        assert resp.json()["checks"]["jwks_loaded"] is True
