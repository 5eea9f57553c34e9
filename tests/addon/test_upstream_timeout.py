"""upstream_timeout: the option, the timer's life (held, answered, cancelled, fired), the 504 label,
and the mitmproxy internals it leans on (so an upgrade that moves them fails here, loudly).

The timers are a fake `call_later` the test fires, so nothing here waits on the wall clock. The real
mitmdump run is tests/reliability/test_upstream.py.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable

import pytest
from mitmproxy import exceptions, http
from mitmproxy.addons import proxyserver
from mitmproxy.proxy import mode_servers, server
from mitmproxy.proxy.layers.http import HttpStream, _http1
from mitmproxy.test import taddons, tflow

from addon import error_answers, meta
from addon.upstream_timeout import UpstreamTimeout, parse_timeout
from tests.addon.jit_fixtures import anyio_backend_fixture  # noqa: F401 (fixture)


class _Handle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _Clock:
    """Stands for loop.call_later: records each timer; `fire()` runs the ones still armed."""

    def __init__(self) -> None:
        self.timers: list[tuple[float, Callable[..., object], tuple[object, ...], _Handle]] = []

    def call_later(self, delay: float, callback: Callable[..., object], *args: object) -> _Handle:
        handle = _Handle()
        self.timers.append((delay, callback, args, handle))
        return handle

    @property
    def delays(self) -> list[float]:
        return [delay for delay, *_ in self.timers]

    def fire(self) -> None:
        due, self.timers = self.timers, []
        for _, callback, args, handle in due:
            if not handle.cancelled:
                callback(*args)


class _Closer:
    def __init__(self, result: bool = True) -> None:
        self.closed: list[str] = []
        self.result = result

    def __call__(self, flow: http.HTTPFlow) -> bool:
        self.closed.append(flow.id)
        return self.result


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def _addon(result: bool = True) -> tuple[UpstreamTimeout, _Clock, _Closer]:
    clock, closer = _Clock(), _Closer(result)
    return UpstreamTimeout(close=closer, call_later=clock.call_later), clock, closer


# -- the option ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("60s", 60.0), ("1500ms", 1.5), ("2.5", 2.5), (" 3S ", 3.0), ("1ms", 0.001), ("3600", 3600.0), ("0.25s", 0.25)],
)
def test_parse_timeout(text: str, seconds: float) -> None:
    assert parse_timeout(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "0", "0ms", "-1s", "abc", "3601", "inf", "nan", "1h", "ms", "5 m s"])
def test_parse_timeout_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="jitgate_upstream_timeout"):
        parse_timeout(text)


def test_bad_option_stops_the_start_and_a_good_one_is_used() -> None:
    addon = UpstreamTimeout()
    with taddons.context(addon) as tctx:
        assert addon.timeout == 60.0  # the default
        with pytest.raises(exceptions.OptionsError, match="jitgate_upstream_timeout"):
            tctx.configure(addon, jitgate_upstream_timeout="0")
        tctx.configure(addon, jitgate_upstream_timeout="250ms")
        assert addon.timeout == 0.25


def test_a_tcp_timeout_below_it_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    addon = UpstreamTimeout()
    with taddons.context(addon) as tctx:
        tctx.options.add_option("tcp_timeout", int, 600, "mitmproxy's")
        tctx.configure(addon, jitgate_upstream_timeout="30s")
        assert "tcp_timeout" not in caplog.text
        tctx.configure(addon, tcp_timeout=20)
        assert "tcp_timeout (20 s) is not above jitgate_upstream_timeout" in caplog.text


# -- the timer -------------------------------------------------------------------------------


def test_silent_upstream_is_marked_closed_and_answered_504() -> None:
    addon, clock, closer = _addon()
    flow = tflow.tflow()
    addon.request(flow)
    assert clock.delays == [addon.timeout] and not closer.closed
    clock.fire()
    assert closer.closed == [flow.id]
    assert meta.state_of(flow).error == "upstream_timeout"  # what the session record will say
    assert addon.timers == {}


def test_headers_in_time_cancel_the_timer_and_a_slow_body_is_not_cut() -> None:
    addon, clock, closer = _addon()
    flow = tflow.tflow()
    addon.request(flow)
    flow.response = tflow.tresp()
    addon.responseheaders(flow)
    clock.fire()  # the body may take longer than the timeout: nothing fires
    assert closer.closed == [] and meta.state_of(flow).error is None and addon.timers == {}
    addon.response(flow)
    assert not flow.error


def test_error_and_answer_cancel_the_timer() -> None:
    addon, clock, closer = _addon()
    failed, answered = tflow.tflow(), tflow.tflow()
    addon.request(failed)
    addon.request(answered)
    failed.error = tflow.terr()
    addon.error(failed)
    answered.response = tflow.tresp()
    addon.response(answered)
    clock.fire()
    assert closer.closed == [] and addon.timers == {}


def test_answer_that_raced_the_timer_is_left_alone() -> None:
    addon, clock, closer = _addon()
    flow = tflow.tflow()
    addon.request(flow)
    flow.response = tflow.tresp()  # headers arrived; the hook has not run yet when the timer fires
    clock.fire()
    assert closer.closed == [] and meta.state_of(flow).error is None


def test_flow_answered_by_the_gateway_gets_no_timer() -> None:
    addon, clock, _ = _addon()
    flow = tflow.tflow()
    meta.state_of(flow).error = "token_required"
    addon.request(flow)
    assert addon.timers == {} and clock.delays == []


@pytest.mark.anyio
async def test_held_flow_starts_its_timer_only_when_resumed() -> None:
    addon, clock, closer = _addon()
    flow = tflow.tflow()
    flow.intercept()  # type: ignore[no-untyped-call]  # approval_hold ran before this addon
    addon.request(flow)
    await _settle()
    clock.fire()  # however long the hold lasts
    assert clock.delays == [] and closer.closed == []
    flow.resume()  # type: ignore[no-untyped-call]  # approved: now it goes upstream
    await _settle()
    assert clock.delays == [addon.timeout]
    clock.fire()
    assert closer.closed == [flow.id]


@pytest.mark.anyio
async def test_denied_hold_is_not_timed_out() -> None:
    addon, clock, closer = _addon()
    flow = tflow.tflow()
    flow.intercept()  # type: ignore[no-untyped-call]
    addon.request(flow)
    flow.response = http.Response.make(403, b"{}")
    meta.state_of(flow).error = "approval_denied"
    flow.resume()  # type: ignore[no-untyped-call]
    await _settle()
    clock.fire()
    assert clock.delays == [] and closer.closed == [] and addon.timers == {}


def test_headers_after_the_timer_fired_are_not_forwarded() -> None:
    addon, clock, _ = _addon()
    flow = tflow.tflow()
    addon.request(flow)
    clock.fire()
    flow.response = tflow.tresp()  # arrived before the close landed
    addon.responseheaders(flow)
    assert flow.error is not None and flow.error.msg == flow.error.KILLED_MESSAGE


@pytest.mark.anyio
async def test_done_cancels_every_timer() -> None:
    addon, clock, closer = _addon()
    flows = [tflow.tflow() for _ in range(3)]
    flows[0].intercept()  # type: ignore[no-untyped-call]
    for f in flows:
        addon.request(f)
    addon.done()
    flows[0].resume()  # type: ignore[no-untyped-call]
    await _settle()
    clock.fire()
    assert closer.closed == [] and addon.timers == {}


def test_close_failure_still_marks_the_flow() -> None:
    addon, clock, closer = _addon(result=False)
    flow = tflow.tflow()
    addon.request(flow)
    clock.fire()
    assert closer.closed == [flow.id] and meta.state_of(flow).error == "upstream_timeout"


@pytest.mark.anyio
async def test_default_timer_is_the_running_loops() -> None:
    closer = _Closer()
    addon = UpstreamTimeout(close=closer)
    addon.timeout = 0.01
    flow = tflow.tflow()
    addon.request(flow)
    assert isinstance(addon.timers[flow.id], asyncio.TimerHandle)  # a timer handle, no task per flow
    for _ in range(200):
        if closer.closed:
            break
        await asyncio.sleep(0.01)
    assert closer.closed == [flow.id]


# -- the 504 label -----------------------------------------------------------------------------


def _answer(raw: bytes) -> tuple[int, dict[str, str]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


@pytest.mark.anyio
async def test_error_hook_labels_only_its_own_task_once() -> None:
    """mitmproxy runs a flow's `error` hooks and then builds its answer in one task: the label
    set by the hook reaches that answer, not another connection's, and not a later one."""
    addon, _, _ = _addon()
    timed_out, other = tflow.tflow(), tflow.tflow()
    meta.state_of(timed_out).error = "upstream_timeout"
    timed_out.error = tflow.terr()
    other.error = tflow.terr()

    async def hook_task(flow: http.HTTPFlow) -> list[tuple[int, dict[str, str]]]:
        addon.error(flow)
        await asyncio.sleep(0)  # other connections run in between
        return [_answer(error_answers.json_error_response(502, "server closed connection")) for _ in range(2)]

    mine, theirs = await asyncio.gather(hook_task(timed_out), hook_task(other))
    assert mine[0] == (504, {"code": "upstream_timeout", "message": error_answers.ANSWERS[504][1]})
    assert mine[1][0] == 502  # used once
    assert [status for status, _ in theirs] == [502, 502]


def test_label_only_relabels_a_502() -> None:
    async def run() -> int:
        error_answers.answer_as(504)
        return _answer(error_answers.json_error_response(413))[0]

    assert asyncio.run(run()) == 413
    with pytest.raises(ValueError):
        error_answers.answer_as(418)


# -- mitmproxy internals this relies on (fail loudly when an upgrade moves them) ----------------


def test_mitmproxy_seams_are_where_upstream_timeout_expects_them() -> None:
    assert isinstance(proxyserver.Proxyserver().connections, dict)  # keyed by client connection id
    assert "self.connections[connection_id]" in inspect.getsource(proxyserver.Proxyserver.inject_event)
    assert "event.flow.client_conn.id" in inspect.getsource(proxyserver.Proxyserver.inject_event)
    assert callable(server.ConnectionHandler.close_connection)
    assert "self.transports" in inspect.getsource(server.ConnectionHandler.__init__)
    assert {"handler", "reader", "writer"} <= set(server.ConnectionIO.__dataclass_fields__)
    # A closed writer ends the read loop as end of file, which the HTTP layer reports to the flow:
    reading = inspect.getsource(server.ConnectionHandler.handle_connection)
    assert "if not data:" in reading and "events.ConnectionClosed(connection)" in reading
    # The error hooks run in the hook task, which then resumes the stream that writes the answer:
    hook_task = inspect.getsource(server.ConnectionHandler.hook_task)
    assert hook_task.index("await self.handle_hook(hook)") < hook_task.index("HookCompleted")
    assert "await self.master.addons.handle_lifecycle(hook)" in inspect.getsource(
        mode_servers.ProxyConnectionHandler.handle_hook
    )
    protocol_error = inspect.getsource(HttpStream.handle_protocol_error)
    assert protocol_error.index("HttpErrorHook") < protocol_error.index("SendHttp(event, self.context.client)")
    assert "make_error_response(status, event.message)" in inspect.getsource(_http1.Http1Server.send)
