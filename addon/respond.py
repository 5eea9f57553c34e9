"""Answer a flow from the gateway with a JSON error `{code, message}` and record why.

The body also carries the fields the flow's dialect's SDK reads its message from
(`jitgate.dialects.error_body`), so a job's own exception says what jitgate said.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mitmproxy import http

from addon.meta import state_of
from jitgate.dialects import error_body
from jitgate.errors import JitgateError
from jitgate.records import Decision


def refuse(
    flow: http.HTTPFlow,
    error: JitgateError,
    *,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
    decision: Decision = Decision.BLOCKED,
) -> None:
    """Answer `flow` with `error`; nothing is forwarded upstream. The record's decision is
    `decision` unless an earlier hook set one (approval_hold: `denied` for a held flow)."""
    state = state_of(flow)
    body: dict[str, Any] = error_body(state.dialect, error.code, error.message)
    if extra:
        body.update(extra)
    flow.response = http.Response.make(
        error.status,
        json.dumps(body).encode(),
        {"Content-Type": "application/json", **(headers or {})},
    )
    state.error = error.code
    state.decide(decision)
