"""Fail closed when a jitgate hook raises.

mitmproxy runs all addons of one `-s` script in one loop per event and ends that loop at the
first exception (it logs "Addon error" and goes on with the flow). Without this guard an
unexpected exception in, say, scope_guard's `request` hook skips leak_guard, approval_hold,
credential_inject and the recorder's reservation, and the request is forwarded unchecked and
unrecorded. `fail_closed(addon)` wraps the addon's flow hooks on the instance: an exception in a
request-side hook refuses the flow (500 `internal_error`), in `response` replaces the answer with
that error (an unmasked body never goes out), in `responseheaders` kills the flow. The rest of
the chain still runs and sees a refused flow, so the recorder records it.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mitmproxy import http

from addon import meta
from addon.respond import refuse
from jitgate.errors import JitgateError

logger = logging.getLogger(__name__)

_REQUEST_SIDE = ("http_connect", "requestheaders", "request")
_HOOKS = (*_REQUEST_SIDE, "responseheaders", "response", "error")


def _internal() -> JitgateError:
    return JitgateError("an internal check failed; nothing was forwarded or answered unchecked")


def on_failure(flow: http.HTTPFlow, hook: str) -> None:
    """What a hook's exception means for `flow` (see the module docstring)."""
    if hook in _REQUEST_SIDE:
        if flow.response is None or meta.state_of(flow).error is None:
            flow.response = None
            refuse(flow, _internal())
    elif hook == "responseheaders":
        flow.kill()  # type: ignore[no-untyped-call]
    elif hook == "response" and meta.state_of(flow).error is None:
        flow.response = None
        refuse(flow, _internal())


def _guard(owner: str, name: str, hook: Callable[[http.HTTPFlow], Any]) -> Callable[[http.HTTPFlow], Any]:
    def failed(flow: http.HTTPFlow, exc: Exception) -> None:
        # The type only: an exception's text may quote the body or a header.
        logger.error("jitgate: %s.%s failed on flow %s (%s); failing closed", owner, name, flow.id, type(exc).__name__)
        on_failure(flow, name)

    if inspect.iscoroutinefunction(hook):

        @functools.wraps(hook)
        async def guarded_async(flow: http.HTTPFlow) -> None:
            try:
                result: Awaitable[None] = hook(flow)
                await result
            except Exception as exc:
                failed(flow, exc)

        return guarded_async

    @functools.wraps(hook)
    def guarded(flow: http.HTTPFlow) -> None:
        try:
            hook(flow)
        except Exception as exc:
            failed(flow, exc)

    return guarded


def fail_closed[A](addon: A) -> A:
    """Wrap `addon`'s flow hooks in place (instance attributes); returns the same object."""
    owner = type(addon).__name__
    for name in _HOOKS:
        hook = getattr(addon, name, None)
        if callable(hook):
            setattr(addon, name, _guard(owner, name, hook))
    return addon
