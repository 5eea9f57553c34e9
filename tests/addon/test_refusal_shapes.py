"""The gateway's refusals in the body shape each dialect's SDK reads (issue 25, item 6), and
`gateway_probe`, the check `jitgate run` makes before minting (item 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mitmproxy.test import taddons, tflow

from addon import meta
from addon.gateway_probe import GatewayProbe
from addon.token_gate import TokenGate
from addon.worker_health import WorkerParts
from jitgate.gateway_check import PROBE_HOST, PROBE_PATH, ProbeAnswer
from tests.addon.jit_fixtures import (  # noqa: F401 (fixtures)
    JWKS_URL,
    TABLE,
    Signer,
    anyio_backend_fixture,
    aws_fixture,
    policy_file_fixture,
)
from tests.addon.test_token_gate import Clock, Fetcher, _flow, _gate

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[2]


def _configured(tctx: taddons.context, gate: TokenGate, policy_file: Path) -> None:
    tctx.configure(gate, jitgate_policy=str(policy_file), jitgate_jwks_url=JWKS_URL, jitgate_table=TABLE)
    gate.running()


@pytest.mark.parametrize(
    ("host", "extra"),
    [
        ("api.cohere.com", {}),  # cohere's SDK shows the body, whose `message` is jitgate's
        ("api.jina.ai", {"detail"}),
        ("store.internal", set()),
        ("nowhere.example", set()),
    ],
)
async def test_a_refusal_before_the_token_takes_the_hosts_dialect_shape(
    aws: dict[str, Any], policy_file: Path, host: str, extra: set[str]
) -> None:
    gate = _gate(aws, Fetcher(Signer()))
    with taddons.context(gate) as tctx:
        _configured(tctx, gate, policy_file)
        f = _flow(host=host)
        await gate.request(f)
        gate.done()
    body = f.response.json()
    assert f.response.status_code == 407 and body["code"] == "token_required"
    assert set(body) == {"code", "message", *extra}
    for name in extra:
        assert body[name] == body["message"]


async def test_the_probe_answers_with_the_gates_issuer_and_keys(aws: dict[str, Any], policy_file: Path) -> None:
    signers = (Signer(), Signer())
    parts = WorkerParts()  # the probe is handed the board token_gate publishes its verifier on, not the gate
    gate = TokenGate(jwks_fetcher=Fetcher(*signers), dynamodb=aws["dynamodb"], monotonic=Clock(), parts=parts)
    probe = GatewayProbe(parts)
    with taddons.context(gate, probe) as tctx:
        _configured(tctx, gate, policy_file)
        connect = tflow.tflow()
        connect.request.method, connect.request.host, connect.request.port = "CONNECT", PROBE_HOST.upper() + ".", 443
        probe.http_connect(connect)
        assert connect.response is not None and connect.response.status_code == 200
        f = _flow(host=PROBE_HOST)
        f.request.method, f.request.path = "GET", PROBE_PATH
        probe.requestheaders(f)
        other = _flow(host=PROBE_HOST)
        probe.requestheaders(other)
        elsewhere = _flow()
        probe.requestheaders(elsewhere)
        gate.done()
    answer = ProbeAnswer.from_json(f.response.json())
    assert answer == ProbeAnswer(gate.verifier.issuer, frozenset(s.kid for s in signers), True)
    assert answer.issuer and f.response.headers["Cache-Control"] == "no-store"
    assert (other.response.status_code, other.response.json()["code"]) == (404, "not_found")
    assert meta.state_of(other).error == "not_found"
    assert elsewhere.response is None and meta.state_of(elsewhere).error is None


async def test_the_probe_says_when_the_keys_are_not_loaded(aws: dict[str, Any], policy_file: Path) -> None:
    parts = WorkerParts()
    gate = TokenGate(jwks_fetcher=Fetcher(fail=True), dynamodb=aws["dynamodb"], monotonic=Clock(), parts=parts)
    probe = GatewayProbe(parts)
    with taddons.context(gate, probe) as tctx:
        tctx.configure(gate, jitgate_policy=str(policy_file), jitgate_jwks_url=JWKS_URL, jitgate_table=TABLE)
        f = _flow(host=PROBE_HOST)
        f.request.method, f.request.path = "GET", PROBE_PATH
        probe.requestheaders(f)
    answer = ProbeAnswer.from_json(f.response.json())
    assert answer is not None and not answer.keys_loaded and not answer.kids


def test_token_gate_stays_small() -> None:
    """STYLE.md 1: one concern, 50-150 lines; code added to the gate moves out of it first."""
    assert len((REPO / "addon" / "token_gate.py").read_text().splitlines()) <= 150


def test_a_probe_without_a_token_gate_says_no_key_is_loaded() -> None:
    """A chain with no token gate publishes no verifier: the probe says so, and `jitgate run` stops."""
    f = _flow(host=PROBE_HOST)
    f.request.method, f.request.path = "GET", PROBE_PATH
    GatewayProbe(WorkerParts()).requestheaders(f)
    assert ProbeAnswer.from_json(f.response.json()) == ProbeAnswer("", frozenset(), False)
