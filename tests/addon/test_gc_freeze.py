"""gc_freeze: the start-up heap leaves the cyclic GC's scans once the gateway runs.

`gc.get_freeze_count()` is no measure of what `gc.freeze()` did: on Python 3.12 every full
collection (automatic ones too) parks the immortal objects it meets in the same permanent
generation (375 at the start of this interpreter), so a count read after `gc.unfreeze()` is 0 or
not depending on whether a collection ran since. The test asks the collector instead whether the
objects built before `running` are still among those it scans (`gc.get_objects()`).
"""

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


def _scanned(objects: list[list[int]]) -> int:
    """How many of `objects` the cyclic GC scans (those in its generations, not frozen)."""
    wanted = {id(o) for o in objects}
    return sum(1 for o in gc.get_objects() if id(o) in wanted)


def test_running_freezes_what_start_up_built(unfrozen: None) -> None:
    built_at_start = [[i] for i in range(1000)]  # tracked containers made before `running`
    assert _scanned(built_at_start) == len(built_at_start)
    addon = GcFreeze()
    with taddons.context(addon):
        addon.running()
    assert _scanned(built_at_start) == 0
    assert gc.get_freeze_count() >= len(built_at_start)
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1  # objects made after the freeze are collected as before
