"""A flow's state is one typed object beside the flow; its plain form in `flow.metadata` is plain
data only, written once, and a flow read back from a file (or copied) gets its state from it."""

from __future__ import annotations

import io
from typing import Any

import pytest
from mitmproxy.io import FlowReader, FlowWriter
from mitmproxy.test import tflow

from addon import meta
from addon.flow_metadata import FlowMetadata
from jitgate import flow_state
from jitgate.devstack.policy import policy_dict
from jitgate.policy import Connection, Policy
from jitgate.records import Finding
from jitgate.token import Claims, Limits, Scope

POLICY = Policy.model_validate(policy_dict("https://issuer.test"))


def _claims(**kw: Any) -> Claims:
    base: dict[str, Any] = dict(
        iss="https://broker.test", aud="jitgate", sub="repo:acme/x", iat=1, nbf=1, exp=2_000_000_000,
        jti="j" * 16, conn="cohere-test", scope=Scope(operations=("rerank",)), limits=Limits(max_documents=5),
        mask="default",
    )
    base.update(kw)
    return Claims(**base)


def test_state_is_one_object_per_flow_and_stays_out_of_the_metadata() -> None:
    f = tflow.tflow()
    state = meta.state_of(f)
    state.claims = _claims()
    state.injected_secret = "s" * 24
    assert meta.state_of(f) is state and meta.state_of(tflow.tflow()) is not state
    assert f.metadata == {}  # nothing is written before the flow ends
    assert "s" * 24 not in repr(state)


def test_published_state_is_plain_and_reads_back_from_a_flow_file(monkeypatch: pytest.MonkeyPatch) -> None:
    f = tflow.tflow(resp=True)
    claims = _claims(job="nightly")
    state = meta.state_of(f)
    state.claims = claims
    state.use_connection(POLICY.connections["cohere-test"])
    state.operation, state.error, state.injected = "rerank", "leak_blocked", True
    state.injected_secret = "the-upstream-credential"
    state.findings.append(Finding(type="email", location="request.body", action="block", offset=3, length=9))
    state.mark_inspected("request")
    FlowMetadata().response(f)
    assert isinstance(f.metadata[flow_state.CLAIMS], dict)
    assert "the-upstream-credential" not in repr(f.metadata)
    buf = io.BytesIO()
    FlowWriter(buf).add(f)  # deep-copies and tnetstring-dumps the metadata: fails on objects
    buf.seek(0)
    (back,) = list(FlowReader(buf).stream())
    calls = []
    real = Claims.model_validate
    monkeypatch.setattr(Claims, "model_validate", lambda v: calls.append(v) or real(v))
    read = meta.state_of(back)  # type: ignore[arg-type]
    assert meta.state_of(back) is read and len(calls) == 1  # type: ignore[arg-type]  # parsed once
    assert read.claims == claims and read.claims is not claims
    assert (read.operation, read.error, read.injected, read.inspected) == ("rerank", "leak_blocked", True, ["request"])
    assert read.findings == state.findings and read.injected_secret is None
    assert read.connection is None and read.connection_name == "cohere-test"
    conn = read.connection_in(POLICY)
    assert isinstance(conn, Connection) and conn.name == "cohere-test"
    assert read.connection_in(None) is conn


def test_in_flight_flows_are_published_at_done() -> None:
    f = tflow.tflow()
    meta.state_of(f).operation = "rerank"
    FlowMetadata().done()
    assert f.metadata[flow_state.OPERATION] == "rerank"


@pytest.mark.parametrize("value", [None, "not claims", {"sub": "x"}, 42])
def test_missing_or_malformed_claims_are_none(value: Any) -> None:
    f = tflow.tflow()
    if value is not None:
        f.metadata[flow_state.CLAIMS] = value
    assert meta.state_of(f).claims is None


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        (flow_state.DECISION, "no-such-decision", "decision"),
        (flow_state.ERROR, 42, "error"),
        (flow_state.INJECTED, "yes", "injected"),
        (flow_state.INSPECTED, "request", "inspected"),
        (flow_state.FINDINGS, ["not a record"], "findings"),
    ],
)
def test_malformed_plain_values_read_as_unset(key: str, value: Any, field: str) -> None:
    f = tflow.tflow()
    f.metadata[key] = value
    assert getattr(meta.state_of(f), field) in (None, False, [])


def test_unknown_connection_is_none() -> None:
    f = tflow.tflow()
    assert meta.state_of(f).connection_in(POLICY) is None and meta.state_of(f).connection_name is None
    g = tflow.tflow()
    g.metadata[flow_state.CONNECTION] = "no-such-connection"
    assert meta.state_of(g).connection_in(POLICY) is None
