"""The durable spool: what a stop cannot ship moves there, and any gateway sharing it ships it.

Real directories, real flock, a real second file system for the copy path (/dev/shm is tmpfs, as
EFS is another file system than the task's own storage); S3 is the in-memory sink of test_spool.
"""

from __future__ import annotations

import fcntl
import gzip
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from jitgate.spool import Spool, SpoolConfig, Uploader, adopt, segment_key
from tests.recorder.test_spool import Clock, Sink, _line


def _spool(root: Path, gateway: str) -> Spool:
    s = Spool(SpoolConfig(directory=root / gateway, gateway=gateway), clock=Clock())
    s.start()
    return s


@pytest.fixture
def other_fs() -> Iterator[Path]:
    """A directory on another file system than tmp_path, where there is one (tmpfs here)."""
    if not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat(tempfile.gettempdir()).st_dev:
        pytest.skip("no second file system to copy across")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
        yield Path(d)


def _stop_with_s3_down(spool: Spool, durable: Path, n: int, start: int = 0) -> Uploader:
    down = Sink(fail=10**6)
    up = Uploader(spool, down.put, tick=0.01, backoff_base=0.01, backoff_max=0.02, durable=durable)
    up.start()
    for i in range(start, start + n):
        spool.append(_line(i))
        if i % 3 == 2:
            spool.rotate()
    up.stop(flush_timeout=0.3, join_timeout=5)
    return up


@pytest.mark.parametrize("across_file_systems", [False, True])
def test_a_stop_moves_what_it_cannot_ship_and_another_gateway_ships_it_once(
    tmp_path: Path, request: pytest.FixtureRequest, across_file_systems: bool
) -> None:
    durable = request.getfixturevalue("other_fs") if across_file_systems else tmp_path / "durable"
    stopped = _spool(tmp_path / "a", "gw-a")
    up = _stop_with_s3_down(stopped, durable, 10)
    left = sorted(p.name for p in (durable / "gw-a").glob("*.jsonl"))
    assert up.deposited == len(left) == 4  # 3 + 3 + 3 + 1 lines
    assert stopped.closed_segments() == [] and list((durable / "gw-a").glob("*.part")) == []
    assert stopped.used_bytes == 0

    sink = Sink()
    other = _spool(tmp_path / "b", "gw-b")
    adopter = Uploader(other, sink.put, durable=durable)
    assert adopter.adopt_durable() == 4
    assert sink.records() == list(range(10))  # every record, none twice
    # Under the stopped gateway's keys: the same objects it would have put itself.
    assert sorted(sink.objects) == sorted(segment_key("sessions/", "gw-a", name) for name in left)
    assert not (durable / "gw-a").exists()
    assert adopter.adopt_durable() == 0


def test_adoption_leaves_a_directory_whose_gateway_holds_its_lock(tmp_path: Path) -> None:
    durable = tmp_path / "durable"
    _stop_with_s3_down(_spool(tmp_path / "a", "gw-a"), durable, 3)
    holder = os.open(durable / "gw-a" / ".lock", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)  # gw-a (or another adopter) is still at work on it
    sink = Sink()
    adopter = Uploader(_spool(tmp_path / "b", "gw-b"), sink.put, durable=durable)
    try:
        assert adopter.adopt_durable() == 0 and sink.objects == {}
    finally:
        os.close(holder)  # the kernel drops a dead holder's lock the same way
    assert adopter.adopt_durable() == 1 and sink.records() == [0, 1, 2]


def test_a_failed_put_keeps_the_segment_for_the_next_try(tmp_path: Path) -> None:
    durable = tmp_path / "durable"
    _stop_with_s3_down(_spool(tmp_path / "a", "gw-a"), durable, 6)
    sink = Sink(fail=1)
    adopter = Uploader(_spool(tmp_path / "b", "gw-b"), sink.put, durable=durable)
    with pytest.raises(ConnectionError):
        adopter.adopt_durable()
    assert len(list((durable / "gw-a").glob("*.jsonl"))) == 2
    assert adopter.adopt_durable() == 2 and sink.records() == list(range(6))


def test_a_copy_a_kill_cut_short_ships_its_complete_lines(tmp_path: Path) -> None:
    durable = tmp_path / "durable"
    _stop_with_s3_down(_spool(tmp_path / "a", "gw-a"), durable, 3)
    (seg,) = (durable / "gw-a").glob("*.jsonl")
    torn = seg.read_bytes()[:-3]  # the copy stopped mid-line: SIGKILL during the deposit
    seg.unlink()
    seg.with_name(seg.name + ".part").write_bytes(torn)
    sink = Sink()
    assert adopt(durable, Uploader(_spool(tmp_path / "b", "gw-b"), sink.put)._ship) == 1
    assert sink.records() == [0, 1]
    assert list(sink.objects) == [segment_key("sessions/", "gw-a", seg.name)]


def test_stopped_gateways_pile_up_and_one_gateway_ships_them_all(tmp_path: Path) -> None:
    durable = tmp_path / "durable"
    for n, gw in enumerate(("gw-a", "gw-b", "gw-c")):
        _stop_with_s3_down(_spool(tmp_path / gw, gw), durable, 3, start=10 * n)
    (durable / "not a gateway").mkdir()  # not a gateway id: not touched
    sink = Sink()
    survivor = _spool(tmp_path / "d", "gw-d")
    up = Uploader(survivor, sink.put, tick=0.01, durable=durable)
    up.start()  # the uploader's thread adopts at start, without anyone asking
    try:
        deadline = 200
        while up.adopted < 3 and deadline:
            deadline -= 1
            up._stop.wait(0.05)
    finally:
        up.stop(flush_timeout=2)
    assert sink.records() == [0, 1, 2, 10, 11, 12, 20, 21, 22]
    assert sorted(p.name for p in durable.iterdir()) == ["not a gateway"]


def test_a_gateway_with_no_durable_spool_keeps_its_segments(tmp_path: Path) -> None:
    s = _spool(tmp_path / "a", "gw-a")
    up = Uploader(s, Sink(fail=10**6).put, durable=None)
    s.append(_line(1))
    up.stop(flush_timeout=0.1)
    assert len(s.closed_segments()) == 1 and up.deposited == 0


def test_adoption_gives_way_to_its_own_gateways_stop(tmp_path: Path) -> None:
    durable = tmp_path / "durable"
    _stop_with_s3_down(_spool(tmp_path / "a", "gw-a"), durable, 9)  # three segments
    sink = Sink()
    calls: list[str] = []

    def ship(gateway: str, path: Path, segment: str) -> None:
        calls.append(segment)
        sink.put(segment_key("sessions/", gateway, segment), gzip.compress(path.read_bytes()))

    assert adopt(durable, ship, stopping=lambda: len(calls) >= 1) == 1  # the stop came after the first
    assert len(list((durable / "gw-a").glob("*.jsonl"))) == 2  # the rest is there for the next adopter
    assert adopt(durable, ship) == 2 and sink.records() == list(range(9))
