"""graceful_stop: the option, the refusal once stopping, and the wait for flows in flight.

The real SIGTERM, under load against mitmdump and a moto server, is tests/reliability/test_stop.py.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons, tflow

from addon import meta
from addon.graceful_stop import GracefulStop
from tests.addon.jit_fixtures import anyio_backend_fixture  # noqa: F401 (fixture)


def _live() -> tflow.HTTPFlow:
    flow = tflow.tflow()
    flow.live = True
    return flow


@pytest.mark.parametrize("value", ["-1", "soon", "1w"])
def test_a_bad_drain_timeout_stops_the_start(value: str) -> None:
    addon = GracefulStop()
    with taddons.context(addon) as tctx, pytest.raises(exceptions.OptionsError, match="jitgate_drain_timeout"):
        tctx.configure(addon, jitgate_drain_timeout=value)


def test_requests_pass_until_the_stop_then_are_refused_with_connection_close() -> None:
    addon = GracefulStop()
    with taddons.context(addon):
        before = _live()
        addon.requestheaders(before)
        assert before.response is None
        addon.stopping = True
        after = _live()
        addon.requestheaders(after)
    assert after.response is not None and after.response.status_code == 503
    assert json.loads(after.response.content or b"")["code"] == "gateway_stopping"
    assert after.response.headers["connection"] == "close" and meta.state_of(after).error == "gateway_stopping"


@pytest.mark.anyio
async def test_the_stop_waits_for_flows_in_flight_and_no_longer() -> None:
    addon = GracefulStop()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, jitgate_drain_timeout="5s")
        slow, quick = _live(), _live()
        addon.requestheaders(slow)
        addon.requestheaders(quick)
        quick.live = False  # answered before the stop
        stopping = asyncio.ensure_future(addon.done())
        await asyncio.sleep(0.2)
        assert not stopping.done() and addon.in_flight() == 1
        slow.live = False  # its answer went out
        await asyncio.wait_for(stopping, 5)
        assert addon.stopping


@pytest.mark.anyio
async def test_the_stop_gives_up_on_a_flow_after_the_drain_timeout() -> None:
    addon = GracefulStop()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, jitgate_drain_timeout="0.2")
        stuck = _live()
        addon.requestheaders(stuck)
        await asyncio.wait_for(addon.done(), 5)
        assert addon.in_flight() == 1
