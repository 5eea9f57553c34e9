"""Flow metadata holds plain data only; the accessors hand back parsed objects, parsed once."""

from __future__ import annotations

import io
from typing import Any

import pytest
from mitmproxy.io import FlowReader, FlowWriter
from mitmproxy.test import tflow

from addon import meta
from jitgate.devstack.policy import policy_dict
from jitgate.policy import Connection, Policy
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


def test_claims_are_stored_plain_and_read_back_without_reparsing(monkeypatch: pytest.MonkeyPatch) -> None:
    f = tflow.tflow()
    claims = _claims()
    meta.set_claims(f, claims)
    assert isinstance(f.metadata[meta.CLAIMS], dict)
    calls = []
    real = Claims.model_validate
    monkeypatch.setattr(Claims, "model_validate", lambda v: calls.append(v) or real(v))
    assert meta.claims(f) is claims and meta.claims(f) is claims
    assert calls == []


def test_a_copied_or_saved_flow_parses_its_plain_claims_once(monkeypatch: pytest.MonkeyPatch) -> None:
    f = tflow.tflow(resp=True)
    claims = _claims(job="nightly")
    meta.set_claims(f, claims)
    meta.set_connection(f, POLICY.connections["cohere-test"])
    buf = io.BytesIO()
    FlowWriter(buf).add(f)  # deep-copies and tnetstring-dumps the metadata: fails on objects
    buf.seek(0)
    (back,) = list(FlowReader(buf).stream())
    first = meta.claims(back)  # type: ignore[arg-type]
    assert first == claims and first is not claims
    assert meta.claims(back) is first  # type: ignore[arg-type]
    conn = meta.connection(back, POLICY)  # type: ignore[arg-type]
    assert isinstance(conn, Connection) and conn.name == "cohere-test"
    assert meta.connection(back, None) is conn  # type: ignore[arg-type]
    assert meta.connection_name(back) == "cohere-test"  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [None, "not claims", {"sub": "x"}, 42])
def test_missing_or_malformed_claims_are_none(value: Any) -> None:
    f = tflow.tflow()
    if value is not None:
        f.metadata[meta.CLAIMS] = value
    assert meta.claims(f) is None


def test_unknown_connection_is_none() -> None:
    f = tflow.tflow()
    assert meta.connection(f, POLICY) is None and meta.connection_name(f) is None
    f.metadata[meta.CONNECTION] = "no-such-connection"
    assert meta.connection(f, POLICY) is None


def test_a_replaced_value_is_parsed_again() -> None:
    f = tflow.tflow()
    meta.set_claims(f, _claims())
    f.metadata[meta.CLAIMS] = _claims(sub="repo:acme/other").model_dump(mode="json")
    parsed = meta.claims(f)
    assert parsed is not None and parsed.sub == "repo:acme/other"
