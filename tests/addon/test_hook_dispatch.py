"""hook_dispatch: the same hook calls, in the same order, with the same errors, as mitmproxy's own."""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy import addonmanager, exceptions, hooks
from mitmproxy.proxy.layers.http import HttpRequestHook
from mitmproxy.test import taddons, tflow

from addon import hook_dispatch

KINDS = ("none", "sync", "async", "future", "raise", "halt", "not_callable", "module", "grow")


class Node:
    """An addon whose `request` hook is one of KINDS; it appends to a shared call log."""

    def __init__(self, label: str, kind: str, calls: list[str], children: list[Node] | None) -> None:
        self.label, self.calls = label, calls
        if children is not None:
            self.addons = children
        if kind == "sync":
            self.request = self._sync
        elif kind == "async":
            self.request = self._async
        elif kind == "future":
            self.request = self._future
        elif kind == "raise":
            self.request = self._raise
        elif kind == "halt":
            self.request = self._halt
        elif kind == "not_callable":
            self.request = 5
        elif kind == "module":
            self.request = types.ModuleType("request")
        elif kind == "grow":  # adds a sub-addon while its own hook runs: traverse reads `addons` after
            self.request = self._grow

    def _sync(self, flow: Any) -> None:
        self.calls.append(f"{self.label}:{flow.id[:4]}")

    async def _async(self, flow: Any) -> None:
        await asyncio.sleep(0)
        self.calls.append(f"{self.label}:async")

    def _future(self, flow: Any) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda _f: self.calls.append(f"{self.label}:future"))
        fut.set_result(None)
        return fut

    def _raise(self, flow: Any) -> None:
        self.calls.append(f"{self.label}:raise")
        raise ValueError(f"boom in {self.label}")

    def _halt(self, flow: Any) -> None:
        self.calls.append(f"{self.label}:halt")
        raise exceptions.AddonHalt()

    def _grow(self, flow: Any) -> None:
        self.calls.append(f"{self.label}:grow")
        late = Node(f"{self.label}.late", "sync", self.calls, None)
        if hasattr(self, "addons"):
            self.addons.append(late)
        else:
            self.addons = [late]

    def __repr__(self) -> str:
        return f"Node({self.label})"


Tree = tuple[str, list["Tree"] | None]
trees: st.SearchStrategy[Tree] = st.recursive(
    st.tuples(st.sampled_from(KINDS), st.none()),
    lambda kids: st.tuples(st.sampled_from(KINDS), st.lists(kids, max_size=3)),
    max_leaves=12,
)


def build(spec: list[Tree], calls: list[str], prefix: str = "") -> list[Node]:
    out = []
    for i, (kind, kids) in enumerate(spec):
        label = f"{prefix}{i}"
        children = None if kids is None else build(kids, calls, label + ".")
        out.append(Node(label, kind, calls, children))
    return out


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


FLOW = tflow.tflow()


def run(dispatch: Any, spec: list[Tree], flow: Any = FLOW) -> tuple[list[str], list[str]]:
    """(hook calls, mitmproxy's error log lines) of one `request` event over a chain built from `spec`."""
    calls: list[str] = []
    manager = object.__new__(addonmanager.AddonManager)
    manager.chain = build(spec, calls)
    log, handler = logging.getLogger("mitmproxy.addonmanager"), _Lines()
    log.addHandler(handler)
    try:
        asyncio.run(dispatch(manager, _request(flow)))
    finally:
        log.removeHandler(handler)
    return calls, handler.lines


def _request(flow: Any) -> hooks.Hook:
    return HttpRequestHook(flow)


@pytest.fixture
def stock() -> Iterator[None]:
    hook_dispatch.uninstall()
    yield
    hook_dispatch.uninstall()


@settings(max_examples=300, deadline=None)
@given(spec=st.lists(trees, max_size=6))
def test_same_calls_order_and_errors_as_mitmproxy(spec: list[Tree]) -> None:
    assert run(hook_dispatch.stock_trigger_event, spec) == run(hook_dispatch.trigger_event, spec)


def test_an_exception_ends_only_that_entrys_sub_addons() -> None:
    spec: list[Tree] = [("sync", [("raise", None), ("sync", None)]), ("sync", None)]
    calls, errors = run(hook_dispatch.trigger_event, spec)
    assert calls == ["0:" + calls[0].split(":")[1], "0.0:raise", calls[0].replace("0:", "1:", 1)]
    assert errors == ["Addon error: boom in 0.0"]


def test_halt_ends_the_event_and_options_error_propagates() -> None:
    calls, errors = run(hook_dispatch.trigger_event, [("halt", None), ("sync", None)])
    assert calls == ["0:halt"] and errors == []

    class Bad:
        def request(self, flow: Any) -> None:
            raise exceptions.OptionsError("bad option")

    manager = object.__new__(addonmanager.AddonManager)
    manager.chain = [Bad()]
    with pytest.raises(exceptions.OptionsError):
        asyncio.run(hook_dispatch.trigger_event(manager, _request(tflow.tflow())))


def test_not_callable_is_an_error_and_a_module_is_skipped() -> None:
    calls, errors = run(hook_dispatch.trigger_event, [("not_callable", None), ("module", None), ("sync", None)])
    assert len(calls) == 1 and calls[0].startswith("2:")
    assert len(errors) == 1 and "not callable" in errors[0]


def test_hooks_are_looked_up_at_each_event() -> None:
    calls: list[str] = []
    node = Node("a", "none", calls, None)
    manager = object.__new__(addonmanager.AddonManager)
    manager.chain = [node]
    asyncio.run(hook_dispatch.trigger_event(manager, _request(tflow.tflow())))
    assert calls == []
    node.request = node._sync  # type: ignore[attr-defined]
    asyncio.run(hook_dispatch.trigger_event(manager, _request(tflow.tflow())))
    assert len(calls) == 1


def test_installs_on_the_pinned_mitmproxy_and_refuses_a_changed_one(
    stock: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Fails on a mitmproxy upgrade that changes the dispatch: re-read the stock code, then the pins.
    assert hook_dispatch.source_digests() == hook_dispatch.STOCK_SOURCES
    assert hook_dispatch.install() and hook_dispatch.installed()
    hook_dispatch.uninstall()
    monkeypatch.setitem(hook_dispatch.STOCK_SOURCES, "traverse", "0" * 64)
    with caplog.at_level(logging.WARNING):
        assert not hook_dispatch.install()
    assert not hook_dispatch.installed()
    assert "keeping mitmproxy's" in caplog.text


def test_a_taddons_master_runs_its_hooks_through_it(stock: None) -> None:
    calls: list[str] = []
    assert hook_dispatch.install()
    node = Node("a", "sync", calls, [Node("b", "async", calls, None)])
    with taddons.context(node) as tctx:
        f = tflow.tflow()
        asyncio.run(tctx.master.addons.handle_lifecycle(_request(f)))
    assert calls == [f"a:{f.id[:4]}", "b:async"]
