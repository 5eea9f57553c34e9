"""fail_closed: a hook that raises refuses its flow, and the rest of the chain still runs on it.

Driven through mitmproxy's own addon manager (one script-like parent holding the chain), because
the bug it guards against is the manager ending the chain's loop at the first exception.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.proxy.layers.http import HttpConnectHook, HttpRequestHook, HttpResponseHook
from mitmproxy.test import taddons, tflow

from addon import meta
from addon.failsafe import fail_closed
from tests.addon.jit_fixtures import anyio_backend_fixture  # noqa: F401 (fixture)

pytestmark = pytest.mark.anyio


class _Raises:
    def __init__(self, where: str) -> None:
        self.where = where

    async def request(self, flow: http.HTTPFlow) -> None:
        if self.where == "request":
            raise RecursionError("maximum recursion depth exceeded (body text would be here)")

    def response(self, flow: http.HTTPFlow) -> None:
        if self.where == "response":
            raise ValueError("cannot mask")

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if self.where == "http_connect":
            raise KeyError("x")


class _Later:
    """Stands for the addons after the failing one (credential_inject, session_recorder)."""

    def __init__(self) -> None:
        self.requests: list[bool] = []
        self.responses = 0

    def request(self, flow: http.HTTPFlow) -> None:
        self.requests.append(meta.refused(flow))
        if not meta.refused(flow):
            flow.request.headers["Authorization"] = "Bearer injected"

    def response(self, flow: http.HTTPFlow) -> None:
        self.responses += 1


class _Chain:
    """Like a `-s` script: one parent whose children mitmproxy walks in one loop per event."""

    def __init__(self, *children: Any) -> None:
        self.addons = list(children)


async def _run(where: str, *, guarded: bool) -> tuple[http.HTTPFlow, _Later]:
    first = _Raises(where)
    later = _Later()
    chain = _Chain(fail_closed(first) if guarded else first, fail_closed(later) if guarded else later)
    with taddons.context() as tctx:
        tctx.master.addons.add(chain)
        f = tflow.tflow(resp=where == "response")
        if where == "http_connect":
            f.request.method = "CONNECT"
            await tctx.master.addons.handle_lifecycle(HttpConnectHook(f))
        elif where == "response":
            await tctx.master.addons.handle_lifecycle(HttpResponseHook(f))
        else:
            await tctx.master.addons.handle_lifecycle(HttpRequestHook(f))
    return f, later


async def test_unguarded_chain_forwards_unchecked() -> None:
    """The failure mode itself: the later addon never runs and the flow has no answer (forwarded)."""
    f, later = await _run("request", guarded=False)
    assert later.requests == [] and f.response is None


async def test_request_hook_exception_refuses_and_later_addons_see_it() -> None:
    f, later = await _run("request", guarded=True)
    assert f.response is not None and f.response.status_code == 500
    body = json.loads(f.response.content or b"")
    assert body["code"] == "internal_error" and "recursion" not in body["message"].lower()
    assert later.requests == [True]  # ran, and saw a refused flow: nothing injected
    assert "injected" not in f.request.headers.get("Authorization", "")


async def test_response_hook_exception_replaces_the_answer() -> None:
    f, later = await _run("response", guarded=True)
    assert f.response is not None and f.response.status_code == 500
    assert json.loads(f.response.content or b"")["code"] == "internal_error"
    assert later.responses == 1  # the recorder still sees the flow


async def test_connect_hook_exception_refuses_the_tunnel() -> None:
    f, _ = await _run("http_connect", guarded=True)
    assert f.response is not None and f.response.status_code == 500


@pytest.mark.parametrize("name", ["request", "response", "http_connect"])
def test_wrapping_keeps_the_addon_object_and_name(name: str) -> None:
    addon = _Raises(name)
    assert fail_closed(addon) is addon
    assert getattr(addon, name).__name__ == name
