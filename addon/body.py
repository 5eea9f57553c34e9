"""The JSON value of a flow's request or response body, parsed once and shared by the chain.

scope_guard (document counts, store field filter), approval_hold (document counts) and the
session recorder (fingerprints and the recorded body) all read the same body; a 100-document
rerank request is ~100 kB of JSON, so parsing it once per flow instead of three times is real
CPU. The value is cached beside the flow (never in `flow.metadata`, which must stay plain data)
and keyed by the body bytes object: when an addon replaces the body (leak_guard masking,
scope_guard's field filter), the next read parses the new body. Callers must not mutate it.
"""

from __future__ import annotations

import weakref
from typing import Any, Literal

from mitmproxy import http

from jitgate import jsontext
from jitgate.jsontext import NOT_JSON, BodyText

__all__ = ["NOT_JSON", "BodyText", "Side", "forget", "json_body", "text"]

Side = Literal["request", "response"]
# flow -> side -> (raw body object, content-encoding, what the body is)
_cache: weakref.WeakKeyDictionary[http.HTTPFlow, dict[str, tuple[bytes | None, str, BodyText]]] = (
    weakref.WeakKeyDictionary()
)


def _parse(message: http.Message, side: Side) -> BodyText:
    try:
        content = message.get_content(strict=True)
    except ValueError:  # leak_guard refuses such a body; nothing here reads it as JSON
        return jsontext.BodyText(NOT_JSON, False)
    ctype = message.headers.get("content-type", "")
    return jsontext.read(content or b"", ctype, strict=side == "request")


def json_body(flow: http.HTTPFlow, side: Side = "request") -> Any:
    """The body's JSON value; None when there is no body, `NOT_JSON` when it is not JSON."""
    return text(flow, side).value


def text(flow: http.HTTPFlow, side: Side = "request") -> BodyText:
    """What the body is (jitgate/jsontext.py), read once per body and shared by the chain."""
    message = flow.request if side == "request" else flow.response
    if message is None:
        return jsontext.EMPTY
    raw = message.raw_content
    encoding = message.headers.get("content-encoding", "")
    sides = _cache.get(flow)
    if sides is not None:
        hit = sides.get(side)
        if hit is not None and hit[0] is raw and hit[1] == encoding:
            return hit[2]
    value = _parse(message, side)
    if sides is None:
        sides = _cache[flow] = {}
    sides[side] = (raw, encoding, value)
    return value


def forget(flow: http.HTTPFlow) -> None:
    """Drop the parsed bodies of a finished flow (the recorder was their last reader)."""
    _cache.pop(flow, None)
