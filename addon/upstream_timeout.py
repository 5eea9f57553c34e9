"""upstream_timeout: an upstream that takes the request and then says nothing gets 504, not a hang.

mitmproxy has no response timeout: a silent upstream holds the flow until `tcp_timeout` (600 s)
and then the client's connection is simply closed. This addon, last in the chain, starts a timer
when a flow leaves the request hooks; a flow held for approval (approval_hold intercepts it)
starts its timer only when it is resumed, so a hold is never timed out here. Response headers,
an answer from the gateway itself or an error cancel the timer; a slow or streamed body after the
headers is not cut. When `jitgate_upstream_timeout` passes first, the flow is marked
`upstream_timeout` (so its session record says so), its upstream connection is closed
(addon/mitmproxy_compat.py), and the 502 mitmproxy then writes goes out as 504 JSON
`{code: upstream_timeout, message}` (addon/error_answers.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader

from addon import error_answers, meta, settings
from addon.mitmproxy_compat import close_upstream
from jitgate.errors import UpstreamTimeout as UpstreamTimeoutError

logger = logging.getLogger(__name__)


class _Timer(Protocol):
    def cancel(self) -> Any: ...


# loop.call_later's shape: (delay, callback, *args) -> a handle with cancel()
CallLater = Callable[..., _Timer]

OPTION = "jitgate_upstream_timeout"
DEFAULT = settings.DEFAULT_UPSTREAM_TIMEOUT


def parse_timeout(text: str) -> float:
    """Seconds from `"60s"`, `"1500ms"` or `"2.5"` (seconds); ValueError unless 0 < value <= 3600 s.

    A string because mitmproxy's `--set` cannot parse a float option.
    """
    return settings.OPTIONS[OPTION].check(text, OPTION)  # type: ignore[no-any-return]


class UpstreamTimeout:
    def __init__(
        self, *, close: Callable[[http.HTTPFlow], bool] = close_upstream, call_later: CallLater | None = None
    ) -> None:
        self._close = close
        self._call_later = call_later  # None: the running loop's (a timer handle, no task per flow)
        self.timeout = parse_timeout(DEFAULT)
        self.timers: dict[str, _Timer] = {}  # flow id -> its running timer (or the task awaiting a hold)

    def load(self, loader: Loader) -> None:
        settings.add_options(loader, "jitgate_upstream_timeout")

    def configure(self, updated: set[str]) -> None:
        if OPTION in updated:
            self.timeout = settings.value(ctx.options, OPTION)
        idle = getattr(ctx.options, "tcp_timeout", None)  # mitmproxy's idle cut of the client connection
        if updated & {OPTION, "tcp_timeout"} and isinstance(idle, int) and idle <= self.timeout:
            logger.warning(
                "jitgate: tcp_timeout (%d s) is not above %s (%.3g s): a silent upstream is cut at tcp_timeout "
                "with no 504", idle, OPTION, self.timeout,
            )

    def done(self) -> None:
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()

    # -- hooks ------------------------------------------------------------------------------

    def request(self, flow: http.HTTPFlow) -> None:
        if meta.refused(flow):
            return  # answered by the gateway: nothing goes upstream
        self._cancel(flow)
        if flow.intercepted:  # held for approval (approval_hold ran first): not sent until resumed
            self.timers[flow.id] = asyncio.get_running_loop().create_task(self._after_hold(flow))
        else:
            self._start(flow)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._cancel(flow)
        if self._timed_out(flow) and flow.killable:
            # The headers came after the timer fired but before the close landed: nothing of
            # this answer goes out (the record already says upstream_timeout).
            flow.kill()  # type: ignore[no-untyped-call]

    def response(self, flow: http.HTTPFlow) -> None:
        self._cancel(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._cancel(flow)
        error_answers.answer_for(flow)  # mitmproxy's own answer to it takes the host's error shape
        if self._timed_out(flow):
            error_answers.answer_as(UpstreamTimeoutError.status)

    # -- the timer ----------------------------------------------------------------------------

    def _start(self, flow: http.HTTPFlow) -> None:
        call_later = self._call_later or asyncio.get_running_loop().call_later
        self.timers[flow.id] = call_later(self.timeout, self._fire, flow)

    async def _after_hold(self, flow: http.HTTPFlow) -> None:
        await flow.wait_for_resume()  # type: ignore[no-untyped-call]
        if flow.response is None and flow.error is None:  # approved: it goes upstream now
            self._start(flow)
        else:
            self.timers.pop(flow.id, None)

    def _fire(self, flow: http.HTTPFlow) -> None:
        self.timers.pop(flow.id, None)
        self.expire(flow)

    def expire(self, flow: http.HTTPFlow) -> bool:
        """The timer passed: mark `flow` timed out and close its upstream; False when it no longer waits."""
        state = meta.state_of(flow)
        if flow.response is not None or flow.error is not None or not flow.live or state.error is not None:
            return False
        state.error = UpstreamTimeoutError.code
        logger.warning(
            "jitgate: no response headers from %s within %.3g s; flow %s answered 504 upstream_timeout",
            flow.request.pretty_host, self.timeout, flow.id,
        )
        if not self._close(flow):
            logger.error("jitgate: the upstream connection of flow %s could not be closed", flow.id)
        return True

    def _cancel(self, flow: http.HTTPFlow) -> None:
        timer = self.timers.pop(flow.id, None)
        if timer is not None:
            timer.cancel()

    @staticmethod
    def _timed_out(flow: http.HTTPFlow) -> bool:
        return meta.state_of(flow).error == UpstreamTimeoutError.code


addons = [UpstreamTimeout()]
