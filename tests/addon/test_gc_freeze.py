"""gc_freeze: the start-up heap leaves the cyclic GC's scans once the gateway runs."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from mitmproxy.test import taddons

from addon.gc_freeze import GcFreeze


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # other tests run on a heap as Python left it


def test_running_freezes_what_start_up_built(unfrozen: None) -> None:
    built_at_start = [[i] for i in range(1000)]  # tracked containers made before `running`
    assert gc.get_freeze_count() == 0
    addon = GcFreeze()
    with taddons.context(addon):
        addon.running()
    assert gc.get_freeze_count() >= len(built_at_start)
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1  # objects made after the freeze are collected as before
