"""build_record constructs the record without validating it again: it must equal the validated one.

Each case builds a flow's record with `build_record` (pydantic's `model_construct`) and checks
that validating what it holds changes nothing: the same field values and types, the same JSON
line. Text from the wire (lone surrogates in the query, the documents, the path and metadata) is
where a missing escape would show.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy import http
from mitmproxy.test import tflow

from addon import meta
from addon.flow_record import build_record
from jitgate.records import Finding, SessionRecord
from jitgate.token import Claims, Limits, Scope

# Text as JSON can carry it: any code point, lone surrogates included.
_TEXT = st.text(st.characters(blacklist_categories=()), max_size=12)
_CLAIM_TEXT = st.text(min_size=1, max_size=12)  # claims are validated: no lone surrogates
_SCORE = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-5, 5), st.none(), st.booleans())


def _claims(sub: str, job: str | None) -> Claims:
    return Claims(
        iss="https://broker.test", aud="jitgate", sub=sub, iat=1, nbf=1, exp=2, jti="jti-" + secrets.token_hex(4),
        conn="cohere-prod", scope=Scope(operations=("rerank", "query")), limits=Limits(), mask="default", job=job,
    )


def _assert_same_as_validated(flow: http.HTTPFlow) -> SessionRecord:
    record = build_record(flow, gateway="gw-1", body_cap=256, now=10.0)
    validated = SessionRecord.model_validate(record.model_dump())
    assert repr(record.__dict__) == repr(validated.__dict__)  # repr: 3 and 3.0, True and 1.0 differ
    assert record.to_json_line() == validated.to_json_line()
    json.loads(record.to_json_line())  # one JSON line, whatever the text
    return record


@settings(max_examples=150, deadline=None)
@given(
    query=_TEXT,
    docs=st.lists(st.one_of(_TEXT, st.fixed_dictionaries({"text": _TEXT}), st.integers()), max_size=6),
    results=st.lists(
        st.fixed_dictionaries({"index": st.one_of(st.integers(0, 9), st.booleans(), _TEXT), "relevance_score": _SCORE}),
        max_size=6,
    ),
    sub=_CLAIM_TEXT,
    job=st.one_of(st.none(), _CLAIM_TEXT),
    path_bytes=st.binary(max_size=8),
    collection=st.one_of(st.none(), _TEXT),
    status=st.sampled_from([200, 400, 500]),
    error=st.sampled_from([None, "leak_blocked", "upstream_timeout"]),
)
def test_rerank_records_equal_their_validated_form(
    query: str, docs: list[Any], results: list[dict[str, Any]], sub: str, job: str | None, path_bytes: bytes,
    collection: str | None, status: int, error: str | None,
) -> None:
    flow = tflow.tflow()
    flow.request.method = "POST"
    flow.request.host = "api.cohere.com"
    flow.request.path = "/v2/rerank/" + path_bytes.decode("utf-8", "surrogateescape")
    # The request as sent, lone surrogates as JSON escapes (what json.dumps writes by default).
    flow.request.content = json.dumps({"query": query, "documents": docs}).encode()
    meta.state_of(flow).claims = _claims(sub, job)
    meta.state_of(flow).operation = "rerank"
    if collection is not None:
        meta.state_of(flow).collection = collection
    if error is not None:
        meta.state_of(flow).error = error
    meta.state_of(flow).findings = [Finding(type="email", kind="pii", location="request.body", action="mask")]
    meta.state_of(flow).inspected = ["request", "response"]
    flow.response = http.Response.make(status, json.dumps({"results": results}), {"content-type": "application/json"})
    record = _assert_same_as_validated(flow)
    assert record.doc_count == len(docs)
    ok = status < 400
    assert [e["index"] for e in record.ranking] == (
        [r["index"] for r in results if type(r["index"]) is int] if ok else []
    )


def test_flows_without_claims_an_answer_or_json_equal_their_validated_form() -> None:
    refused = tflow.tflow()
    refused.request.path = "/v1/rerank/\udcff"  # the byte 0xff, as mitmproxy decodes it
    meta.state_of(refused).error = "token_missing"
    _assert_same_as_validated(refused)

    failed = tflow.tflow(err=True)
    failed.request.content = b"\xff\xfe not json"
    meta.state_of(failed).claims = _claims("job", None)
    meta.state_of(failed).operation = "rerank"
    record = _assert_same_as_validated(failed)
    # No UTF-8: leak_guard never marks such a body inspected, so it stays out of the record.
    assert record.status == 0 and record.error == "upstream_error" and record.request_body is None
    failed.request.content = b"not json, but text"
    meta.state_of(failed).inspected = ["request"]
    record = _assert_same_as_validated(failed)
    assert record.request_body is not None

    store = tflow.tflow(resp=True)
    store.request.path = "/api/v1/collections/c/query"
    store.request.content = json.dumps({"query_embeddings": [[0.5] * 8], "n_results": 1}).encode()
    store.response.content = json.dumps({"ids": [["a"]], "embeddings": [[[0.1] * 200]]}).encode()
    meta.state_of(store).claims = _claims("s", "j")
    meta.state_of(store).operation = "query"
    meta.state_of(store).collection = "c"
    meta.state_of(store).inspected = ["request", "response"]
    record = _assert_same_as_validated(store)
    assert [v.dim for v in record.embeddings] == [8, 200]
