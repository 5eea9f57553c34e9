"""Answer a flow from the gateway with a JSON error `{code, message}` and record why."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mitmproxy import http

from addon import meta
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
    body: dict[str, Any] = error.to_dict()
    if extra:
        body.update(extra)
    flow.response = http.Response.make(
        error.status,
        json.dumps(body).encode(),
        {"Content-Type": "application/json", **(headers or {})},
    )
    flow.metadata[meta.ERROR] = error.code
    flow.metadata.setdefault(meta.DECISION, decision)
