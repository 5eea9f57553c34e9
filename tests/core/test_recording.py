"""record_of: the session record of one exchange from its state, without mitmproxy."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from jitgate.flow_state import FlowState
from jitgate.recording import Exchange, record_of
from jitgate.records import Decision, Finding
from jitgate.token import Claims, Limits, Scope

REQUEST = {"model": "m", "query": "which doc", "documents": ["alpha", "beta"]}
ANSWER = {"results": [{"index": 1, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.1}]}


def _exchange(**kw: Any) -> Exchange:
    req, resp = json.dumps(REQUEST).encode(), json.dumps(ANSWER).encode()
    base = Exchange(
        flow_id="f1", method="POST", host="api.cohere.com", path="/v2/rerank?key=abc#frag", client="10.0.0.1:5000",
        started=100.0, ended=100.25, request_bytes=len(req), request_content=req, request_json=REQUEST,
        status=200, response_bytes=len(resp), response_content=resp, response_json=ANSWER,
    )
    return replace(base, **kw)


def _state(**kw: Any) -> FlowState:
    claims = Claims(
        iss="https://b.test", aud="jitgate", sub="repo:acme/x", iat=1, nbf=1, exp=2_000_000_000, jti="j" * 16,
        conn="cohere-test", scope=Scope(operations=("rerank",)), limits=Limits(), mask="default", job="nightly",
    )
    state = FlowState(claims=claims, operation="rerank", inspected=["request", "response"], token_sha256="0" * 64)
    for k, v in kw.items():
        setattr(state, k, v)
    return state


def test_an_allowed_rerank_is_recorded_with_its_summary_and_no_query_string() -> None:
    rec = record_of(_state(), _exchange(), gateway="gw", body_cap=8192, now=200.0)
    assert (rec.sub, rec.conn, rec.job, rec.decision, rec.error, rec.status) == (
        "repo:acme/x", "cohere-test", "nightly", "allowed", None, 200
    )
    assert rec.path == "/v2/rerank" and rec.latency_ms == 250.0 and rec.client == "10.0.0.1:5000"
    assert rec.rerank_query == "which doc" and rec.doc_count == 2
    assert rec.request_body is not None and rec.response_body is not None


@pytest.mark.parametrize(("where", "gone"), [("request.body", "request"), ("response.body", "response"),
                                             ("request.path", "path"), ("somewhere.new", "all")])
def test_a_finding_not_masked_in_place_keeps_its_part_out(where: str, gone: str) -> None:
    state = _state(findings=[Finding(type="email", location=where, action="block")], decision=Decision.BLOCKED)
    rec = record_of(state, _exchange(), gateway="gw", body_cap=8192, now=200.0)
    assert (rec.request_body is None) is (gone in ("request", "all"))
    assert (rec.rerank_query is None) is (gone in ("request", "all"))
    assert (rec.response_body is None) is (gone in ("response", "all"))
    assert (rec.path == "[withheld]") is (gone in ("path", "all"))
    assert rec.findings[0].location == where and rec.decision == "blocked"


def test_bodies_not_inspected_are_not_recorded() -> None:
    rec = record_of(_state(inspected=[]), _exchange(), gateway="gw", body_cap=8192, now=200.0)
    assert rec.request_body is None and rec.response_body is None and rec.rerank_query is None


def test_a_failed_exchange_has_status_0_its_failure_and_a_blocked_default() -> None:
    rec = record_of(_state(), _exchange(failure="upstream_error", ended=None), gateway="gw", body_cap=8192, now=101.0)
    assert (rec.status, rec.error, rec.decision, rec.latency_ms) == (0, "upstream_error", "blocked", 1000.0)
    refused = record_of(_state(error="token_required", claims=None, connection_name="cohere-test"),
                        _exchange(failure="upstream_error"), gateway="gw", body_cap=8192, now=101.0)
    assert (refused.error, refused.sub, refused.conn) == ("token_required", None, "cohere-test")
