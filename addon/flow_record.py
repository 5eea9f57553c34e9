"""A flow read into the record's values (not an addon of the chain; what is recorded, and what
withheld, is jitgate/recording.py's).
"""

from __future__ import annotations

from typing import Any

from mitmproxy import flow as mflow
from mitmproxy import http

from addon import body, meta
from jitgate.recording import Exchange, record_of
from jitgate.records import SessionRecord


def _json(flow: http.HTTPFlow, side: body.Side) -> Any:
    value = body.json_body(flow, side)  # parsed once per flow, shared with scope_guard / approval_hold
    return None if value is body.NOT_JSON else value


def exchange(flow: http.HTTPFlow) -> Exchange:
    """What the record needs from the flow itself (jitgate/recording.py)."""
    request, response = flow.request, flow.response
    req_content = request.raw_content and request.get_content(strict=False)
    resp_content = response.raw_content and response.get_content(strict=False) if response is not None else None
    peer = flow.client_conn.peername
    failure = None
    if flow.error is not None:
        failure = "flow_killed" if flow.error.msg == mflow.Error.KILLED_MESSAGE else "upstream_error"
    return Exchange(
        flow_id=flow.id,
        method=request.method,
        host=request.pretty_host,
        path=request.path,
        client=f"{peer[0]}:{peer[1]}" if peer else None,
        started=request.timestamp_start,
        ended=response.timestamp_end if response is not None else None,
        request_bytes=len(request.raw_content or b""),
        request_content=req_content or None,
        request_json=_json(flow, "request") if req_content else None,
        status=response.status_code if response is not None else None,
        response_bytes=len(response.raw_content or b"") if response is not None else 0,
        response_content=resp_content or None,
        response_json=_json(flow, "response") if resp_content and response is not None else None,
        failure=failure,
    )


def build_record(flow: http.HTTPFlow, *, gateway: str, body_cap: int, now: float) -> SessionRecord:
    """The record of `flow` as it stands after the chain."""
    return record_of(meta.state_of(flow), exchange(flow), gateway=gateway, body_cap=body_cap, now=now)
