"""Reading a flow's parts for leak_guard: headers, target and decoded bodies scanned, the findings
into the flow's state (jitgate/leaks.py decides what is found and what is done with it).

Not an addon of the chain: leak_guard calls these with its scanner and limits.
"""

from __future__ import annotations

from mitmproxy import http

from addon import body as bodies
from addon import meta
from jitgate import leaks
from jitgate.digest import blank_vectors
from jitgate.flow_state import Side
from jitgate.inspect import Scanner, actions
from jitgate.inspect.masking import Hit
from jitgate.inspect.scanner import ScanResult


def literals(flow: http.HTTPFlow) -> list[bytes]:
    """The injected credential, looked for as it is (it is masked wherever it shows up)."""
    value = meta.state_of(flow).injected_secret
    return [value.encode()] if value else []


def scan_body(
    scanner: Scanner, flow: http.HTTPFlow, plan: actions.Plan, where: str, body: bytes, json_text: bool
) -> ScanResult:
    # Embedding vectors are no text: a JSON body is scanned with them blanked (offsets kept).
    scanned = blank_vectors(body) if json_text else body
    result = leaks.scan(scanner, scanned, plan, literals(flow), json_text=json_text)
    records = leaks.finding_records(plan, where, result.findings, body if json_text else None)
    meta.state_of(flow).findings.extend(records)
    return result


def scan_target(scanner: Scanner, flow: http.HTTPFlow, plan: actions.Plan) -> ScanResult:
    result = leaks.scan_target(scanner, plan, flow.request.path)
    meta.state_of(flow).findings.extend(leaks.finding_records(plan, "request.path", result.findings))
    return result


def scan_headers(
    scanner: Scanner, flow: http.HTTPFlow, message: http.Message, side: Side, plan: actions.Plan
) -> list[Hit]:
    """Scan and mask header values in place; the findings (recorded)."""
    fields = leaks.header_fields(side, message.headers.items(multi=True))  # type: ignore[no-untyped-call]
    found = leaks.scan_headers(scanner, plan, side, fields, literals(flow))
    meta.state_of(flow).findings.extend(found.records)
    for name, value in found.edits:
        if value is None:
            message.headers.pop(name, None)
        else:
            message.headers[name] = value
    return found.findings


def decoded(message: http.Message, max_bytes: int) -> bytes | leaks.Unreadable:
    """The decoded body, or why it cannot be inspected (the content encoding is dropped then,
    so nothing after this decodes it: the recorder)."""
    encoding = message.headers.get("content-encoding", "")
    why = leaks.body_problem(message.raw_content or b"", encoding, max_bytes)
    if why is not None:
        message.headers.pop("content-encoding", None)
        return why
    try:
        body = message.get_content(strict=True) or b""
    except ValueError:
        return "undecodable"
    return "too_large" if len(body) > max_bytes else body


def mask_refused(scanner: Scanner, flow: http.HTTPFlow, plan: actions.Plan, max_bytes: int) -> None:
    """A flow an earlier addon refused goes nowhere, but its record must be masked too: its
    target and body are scanned and masked in place for the recorder. A body that cannot be
    read stays unmarked, so the recorder keeps it out of the record."""
    if meta.state_of(flow).inspected:
        return
    req = flow.request
    target = scan_target(scanner, flow, plan)
    if target.edits:
        req.path = leaks.masked_text(target, req.path)
    body = decoded(req, max_bytes) if req.raw_content else b""
    if isinstance(body, str):
        return
    text = bodies.text(flow, "request")
    if text.problem is not None:
        return
    result = scan_body(scanner, flow, plan, "request.body", body, text.json_text)
    if result.edits:
        req.content = result.masked(body)
    meta.state_of(flow).mark_inspected("request")
