"""A streamed answer masked piece by piece, for leak_guard: the stream set up at the response's
headers, cut at the limit, and its findings taken when it ends (jitgate/masked_stream.py).

Not an addon of the chain: leak_guard calls these with its scanner and limits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mitmproxy import http

from addon import body as bodies
from addon import flow_scan, meta
from addon.mitmproxy_compat import close_upstream
from addon.respond import refuse
from jitgate import leaks
from jitgate.errors import JitgateError, UpstreamResponseNotUtf8
from jitgate.inspect import Scanner, StreamMasker, actions
from jitgate.masked_stream import MaskStream, decompressor
from jitgate.records import Decision

logger = logging.getLogger(__name__)


def streamed(resp: http.Response) -> bool:
    """Event streams and explicitly chunked bodies go out chunk by chunk; the rest is buffered
    (and masked whole in `response`), so the session record keeps the body."""
    ctype = resp.headers.get("content-type", "").lower()
    chunked = "chunked" in resp.headers.get("transfer-encoding", "").lower()
    return ctype.startswith("text/event-stream") or chunked


def start(
    flow: http.HTTPFlow, resp: http.Response, scanner: Scanner, plan_of: Callable[[], actions.Plan], *,
    max_bytes: int, window: int,
) -> None:
    """Mask `resp` as it streams, unless it must be read whole (an unknown encoding, which the
    response hook refuses, or a later check that needs the whole answer: a store's field filter)."""
    state = meta.state_of(flow)
    decode = decompressor(resp.headers.get("content-encoding", ""), max_bytes)
    if decode is None or state.buffer_response:
        return
    plan = plan_of()
    # The headers go out now, before any of the body: they are masked here, not in `response`.
    if flow_scan.scan_headers(scanner, flow, resp, "response", plan):
        state.decide(Decision.MASKED)
    # JSON strings in the stream (an event's data, a chunked JSON answer) are read as a client
    # parses them: their escapes are decoded, each string whole, held back at most to the limit.
    masker = StreamMasker(  # allowed PII is not looked for in a stream: it could only be masked there
        scanner, pii=plan.pii_types if plan.pii != "allow" else (), literals=flow_scan.literals(flow),
        window=window,
        json_strings=True, max_hold=max_bytes,
    )
    resp.headers.pop("content-encoding", None)
    resp.headers.pop("content-length", None)
    state.stream = resp.stream = MaskStream(masker, decode, max_bytes, lambda error: cut(flow, error))


def cut(flow: http.HTTPFlow, error: JitgateError) -> None:
    """A streamed response went over the limit or does not decode: stop reading the upstream."""
    state = meta.state_of(flow)
    state.error, state.decision = error.code, Decision.BLOCKED
    logger.warning("jitgate: streamed response of flow %s cut (%s)", flow.id, error.code)
    close_upstream(flow)


def finish(flow: http.HTTPFlow, resp: http.Response, stream: MaskStream, plan: actions.Plan) -> None:
    """The stream's end: its findings recorded, or the answer replaced when it was cut."""
    state = meta.state_of(flow)
    if stream.failed is not None:  # the body ended before the close landed: answer was cut
        replace(flow, stream.failed)
        if flow.killable:
            flow.kill()  # type: ignore[no-untyped-call]  # the client must not take it as complete
        return
    if stream.complete:  # already sent; this copy is what the session record sees
        resp.data.content = bytes(stream.sent)
    records = leaks.finding_records(plan, "response.body", stream.masker.findings)
    state.findings.extend(records)
    if records:
        state.decide(Decision.MASKED)
    if stream.complete:
        state.mark_inspected("response")


def mask_whole(scanner: Scanner, flow: http.HTTPFlow, resp: http.Response, plan: actions.Plan, max_bytes: int) -> None:
    """A buffered upstream answer scanned and masked whole, or replaced when it cannot be read."""
    state = meta.state_of(flow)
    body = flow_scan.decoded(resp, max_bytes)
    if isinstance(body, str):
        replace(flow, leaks.unreadable_response(body))
        return
    text = bodies.text(flow, "response")
    if text.problem is not None:
        replace(flow, UpstreamResponseNotUtf8("the upstream response is not UTF-8, so it cannot be masked"))
        return
    found = flow_scan.scan_headers(scanner, flow, resp, "response", plan)
    result = flow_scan.scan_body(scanner, flow, plan, "response.body", body, text.json_text)
    if result.edits:
        resp.content = result.masked(body)
    if found or result.findings:
        state.decide(Decision.MASKED)
    state.mark_inspected("response")


def ended_early(flow: http.HTTPFlow) -> None:
    """A stream cut short never reaches `response`: its masker and the injected credential are
    held no longer than the flow."""
    state = meta.state_of(flow)
    stream, state.stream, state.injected_secret = state.stream, None, None
    if isinstance(stream, MaskStream) and stream.failed is not None:
        # Cut here (upstream closed by `cut`): the flow is recorded as failed with its code,
        # like any flow the upstream left without an answer, not as the upstream's status.
        flow.response = None


def replace(flow: http.HTTPFlow, error: JitgateError) -> None:
    """Answer with an error instead of an upstream response that cannot be inspected."""
    flow.response = None
    refuse(flow, error)
