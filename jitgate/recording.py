"""What the session record of one exchange says, whatever protocol carried it.

`record_of(state, exchange, ...)` builds the `SessionRecord` from the flow's state (who, which
connection, operation, findings, decision, error) and an `Exchange` (what the adapter read off
the request and its answer: sizes, decoded bodies, parsed JSON, times). Never recorded: headers,
query strings, raw embedding vectors (dimension + SHA-256 instead), store fields the token could
not see, and a body holding a finding that was not masked in place (blocked, held for review or
allowed); only a body the inspection masked as it now stands is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jitgate import digest
from jitgate.flow_state import FlowState
from jitgate.records import Finding, SessionRecord, VectorDigest, decision_of, escape_text, iso_ts, record_id


@dataclass(frozen=True)
class Exchange:
    """One request and its answer as a recorder reads them (bodies decoded, JSON parsed once)."""

    flow_id: str
    method: str
    host: str
    path: str  # the request target; only its path part is recorded
    client: str | None  # "address:port" of the client
    started: float
    ended: float | None  # None: no answer finished
    request_bytes: int  # as sent (encoded)
    request_content: bytes | None  # decoded; None or empty: no body
    request_json: Any = None  # the parsed body, None when absent or no JSON
    status: int | None = None  # None: no answer
    response_bytes: int = 0
    response_content: bytes | None = None
    response_json: Any = None
    failure: str | None = None  # why the exchange failed after the request (flow_killed, upstream_error)


def _part(where: str) -> str:
    """Which recorded part a leak_guard location (`request.body`, `request.path`, `response.header:x`) is in."""
    if ".header" in where:
        return "header"  # headers are never recorded
    if where.startswith(("request.path", "request.url", "request.query")):
        return "url"
    for side in ("request", "response"):
        if where.startswith(side):
            return side
    return "unknown"  # an unfamiliar format counts against every part: withhold more, never less


def _withheld(findings: list[Finding], part: str) -> bool:
    """A part with a finding that was not masked in place still holds the matched text."""
    return any(f.action != "mask" and _part(f.location) in (part, "unknown") for f in findings)


def _body_withheld(findings: list[Finding], side: str) -> bool:
    return _withheld(findings, side)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _path_withheld(findings: list[Finding]) -> bool:
    return _withheld(findings, "url")


def _bare_path(path: str) -> str:
    """The path without query or fragment (a client may put anything there, a token too)."""
    return path.split("?", 1)[0].split("#", 1)[0]


def record_of(state: FlowState, ex: Exchange, *, gateway: str, body_cap: int, now: float) -> SessionRecord:
    """The record of one exchange as it stands after every check."""
    claims = state.claims
    raw_findings = state.findings
    findings = tuple(raw_findings)
    operation = state.operation
    req_content, resp_content = ex.request_content, ex.response_content
    answered = ex.status is not None
    visible = claims.scope.fields if claims is not None else None
    req_json = ex.request_json if req_content else None
    resp_json = ex.response_json if resp_content and answered else None
    summary = digest.RerankSummary()
    req_view, resp_view = req_json, resp_json
    if operation == "rerank":
        ok = ex.status is not None and ex.status < 400
        summary = digest.summarize_rerank(req_json, resp_json if ok else None)
        req_view, resp_view = digest.rerank_request_view(req_json), digest.rerank_response_view(resp_json)

    vectors: list[VectorDigest] = []
    truncated = False
    request_body: str | None = None
    response_body: str | None = None
    # Only a body the inspection masked as it now stands is recorded (a flow refused before any
    # body was read, or one that cannot be read as a parser would, keeps its body out of the record).
    inspected = state.inspected
    answer_read = "response" in inspected or state.error is not None  # inspected, or the gateway's own answer
    if "request" in inspected and not _body_withheld(raw_findings, "request"):
        d = digest.digest_body(req_content or None, location="request", limit=body_cap, parsed=req_view)
        request_body, truncated = d.text, d.truncated
        vectors += d.vectors
    if answered and answer_read and not _body_withheld(raw_findings, "response"):
        d = digest.digest_body(
            resp_content or None, location="response", limit=body_cap, visible_fields=visible, parsed=resp_view
        )
        response_body, truncated = d.text, truncated or d.truncated
        vectors += d.vectors

    query = summary.query
    if query is not None:
        withheld = "request" not in inspected or _body_withheld(raw_findings, "request")
        query = None if withheld else digest.cap(query, body_cap)[0]

    error = state.error
    if ex.failure is not None and error is None:  # with a response too: it failed after the headers
        error = ex.failure
    decision = decision_of(state.decision, error)
    # Built from values typed here, so not validated again (`model_construct`): validating the
    # document hashes and ranking entries cost ~20 us a record. Text from the wire is escaped
    # here as the model's validator would (`escape_text`); tests/addon/test_record_fast_path.py checks
    # such records equal validated ones.
    return SessionRecord.model_construct(
        record_id=record_id(gateway, ex.flow_id),
        ts=iso_ts(ex.started),
        gateway=gateway,
        flow_id=ex.flow_id,
        jti=claims.jti if claims else None,
        sub=escape_text(claims.sub) if claims else None,
        conn=claims.conn if claims else state.connection_name,
        job=escape_text(claims.job) if claims else None,
        apv=claims.apv if claims else None,
        token_sha256=state.token_sha256,
        client=escape_text(ex.client),
        method=escape_text(ex.method),
        host=escape_text(ex.host),
        path="[withheld]" if _path_withheld(raw_findings) else escape_text(_bare_path(ex.path)),
        operation=escape_text(operation),
        collection=escape_text(state.collection),
        tenant=escape_text(state.tenant),
        database=escape_text(state.database),
        status=ex.status if ex.status is not None and ex.failure is None else 0,  # 0: no whole answer
        request_bytes=ex.request_bytes,
        response_bytes=ex.response_bytes if answered else 0,
        latency_ms=round(max(0.0, float((ex.ended or now) - ex.started)) * 1000, 3),
        decision=str(decision),
        error=_opt_str(error),
        findings=findings,
        rerank_query=escape_text(query),
        doc_count=summary.doc_count,
        doc_sha256=summary.doc_sha256,
        ranking=summary.ranking,
        embeddings=tuple(vectors[: digest.MAX_VECTOR_DIGESTS]),
        request_body=escape_text(request_body),
        response_body=escape_text(response_body),
        truncated=truncated,
        approval_id=state.hold_id,
    )
