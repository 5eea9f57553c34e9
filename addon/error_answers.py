"""mitmproxy's own error answers (upstream unreachable or reset, body over `body_size_limit`,
unparseable request) as jitgate's JSON `{code, message}` instead of an HTML page.

mitmproxy writes those answers in its HTTP/1 server layer, after the `error` hook, with no hook to
change them; the only seam is the module function that builds them, which addon/mitmproxy_compat.py
replaces with `json_error_response` (and refuses to start where mitmproxy's differs). Over HTTP/2
(client side) mitmproxy writes the headers (`content-type: text/html`) and the page with the raw
error text inline in `Http2Server`'s event handler: addon/mitmproxy_compat.py puts a handler in front
of it that answers such an error with `json_error_body` (the same status, code and message).
The message is a fixed sentence per status: mitmproxy's own text can name internal hosts. The body
takes the error shape of the host's dialect (`jitgate.dialects.error_body`, as the chain's refusals
do), so a vendor SDK's own exception carries jitgate's message and code.
tests/reliability/test_upstream.py fails if a mitmproxy upgrade moves the seam.

The builder is not told which flow it answers. An addon that knows better (upstream_timeout: the
gateway itself cut a silent upstream) calls `answer_as(504)` from the flow's `error` hook: mitmproxy
runs the `error` hooks and then builds the answer in the same asyncio task (the hook task), so a
context variable set in the hook reaches the builder and no other connection. It is used once.
The dialect comes the same way: upstream_timeout's `error` hook (every flow's) calls `answer_for`.
An answer with no flow (a request that is not valid HTTP) has no dialect: plain `{code, message}`.
"""

from __future__ import annotations

import contextvars
import json

from mitmproxy import ctx, http, version
from mitmproxy.net.http import http1

from addon import meta, settings
from jitgate.dialects import error_body
from jitgate.errors import (
    BadRequest,
    GatewayError,
    JitgateError,
    PayloadTooLarge,
    PolicyError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

# mitmproxy's status -> the error it goes out as, with a fixed message (mitmproxy's own text can
# name internal hosts). Codes and classes are jitgate/errors.py's.
_ERRORS: dict[int, JitgateError] = {
    400: BadRequest("the request is not valid HTTP"),
    413: PayloadTooLarge("the request body is over the gateway's size limit"),
    502: UpstreamUnavailable("the upstream could not be reached or closed the connection; nothing was answered"),
    504: UpstreamTimeout("the upstream did not answer in time"),
}
ANSWERS = {status: (error.code, error.message) for status, error in _ERRORS.items()}
_FALLBACK = (GatewayError.code, "the gateway could not complete the request")
# Only a 502 (upstream closed or unreachable) may be re-labelled: the gateway closed it itself.
_RELABEL_FROM = 502
_override: contextvars.ContextVar[int | None] = contextvars.ContextVar("jitgate_error_answer", default=None)
_dialect: contextvars.ContextVar[str | None] = contextvars.ContextVar("jitgate_error_dialect", default=None)


def answer_as(status_code: int) -> None:
    """Call from an `error` hook: this flow's coming 502 from mitmproxy goes out as `status_code`."""
    if status_code not in ANSWERS:
        raise ValueError(f"no JSON answer for status {status_code}")
    _override.set(status_code)


def answer_for(flow: http.HTTPFlow) -> None:
    """Call from an `error` hook: this flow's coming answer from mitmproxy takes the error shape of
    its dialect: the flow's, else its host's in the policy in use (a body over `body_size_limit` is
    answered before the `request` hooks name one)."""
    dialect = meta.state_of(flow).dialect
    location = getattr(ctx.options, "jitgate_policy", "")
    if dialect is None and location:
        try:
            dialect = settings.POLICIES.current(location).policy.dialect_for_host(flow.request.host)
        except PolicyError:
            dialect = None
    _dialect.set(dialect)


def json_error_body(status_code: int) -> tuple[int, bytes]:
    """The status and JSON body jitgate answers for mitmproxy's error `status_code` (either HTTP
    version); an `answer_as` and an `answer_for` from this flow's `error` hook apply, once."""
    override, dialect = _override.get(), _dialect.get()
    # Once: tasks started later from this one must not inherit them.
    if override is not None:
        _override.set(None)
        if status_code == _RELABEL_FROM:
            status_code = override
    if dialect is not None:
        _dialect.set(None)
    code, text = ANSWERS.get(status_code, _FALLBACK)
    return status_code, json.dumps(error_body(dialect, code, text)).encode()


def json_error_response(status_code: int, message: str = "") -> bytes:
    """The bytes of an HTTP/1 error answer; `message` (mitmproxy's text) is deliberately not used."""
    status_code, body = json_error_body(status_code)
    resp = http.Response.make(
        status_code,
        body,
        http.Headers(Server=version.MITMPROXY, Connection="close", Content_Type="application/json"),
    )
    raw: bytes = http1.assemble_response(resp)  # type: ignore[no-untyped-call]
    return raw
