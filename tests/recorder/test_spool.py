from __future__ import annotations

import asyncio
import gzip
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from jitgate import spool as spool_mod
from jitgate.spool import Spool, SpoolConfig, SpoolFull, Uploader, read_segment, segment_key

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _line(i: int, pad: int = 0) -> bytes:
    return json.dumps({"i": i, "pad": "x" * pad}).encode() + b"\n"


def _spool(tmp_path: Path, clock: Clock | None = None, **over: float) -> Spool:
    cfg = SpoolConfig(directory=tmp_path / "spool", gateway="gw-a", **over)  # type: ignore[arg-type]
    s = Spool(cfg, clock=clock or Clock())
    s.start()
    return s


class Sink:
    """An in-memory S3: key -> bytes, failing the next `fail` puts."""

    def __init__(self, fail: int = 0) -> None:
        self.objects: dict[str, bytes] = {}
        self.fail = fail
        self.attempts = 0
        self.lock = threading.Lock()

    def put(self, key: str, body: bytes) -> None:
        with self.lock:
            self.attempts += 1
            if self.fail > 0:
                self.fail -= 1
                raise ConnectionError("s3 down")
            self.objects[key] = body

    def records(self) -> list[int]:
        out: list[int] = []
        for body in self.objects.values():
            out += [json.loads(x)["i"] for x in gzip.decompress(body).splitlines()]
        return sorted(out)


def test_segment_key_is_hive_partitioned_and_idempotent() -> None:
    name = "20270115T085959.123456Z-000001-0a1b2c3d.jsonl"
    key = segment_key("sessions/", "gw-a", name)
    assert key == "sessions/dt=2027-01-15/hour=08/gw-a-20270115T085959.123456Z-000001-0a1b2c3d.jsonl.gz"
    assert key == segment_key("sessions/", "gw-a", name)
    with pytest.raises(ValueError):
        segment_key("sessions/", "gw-a", "../../etc/passwd")


def test_rotates_by_size(tmp_path: Path) -> None:
    s = _spool(tmp_path, max_segment_bytes=1000)
    for i in range(30):
        s.append(_line(i, 80))
    s.close()
    segments = s.closed_segments()
    assert len(segments) > 2
    assert all(p.stat().st_size <= 1000 for p in segments)
    lines = [json.loads(x)["i"] for p in segments for x in p.read_bytes().splitlines()]
    assert lines == list(range(30))


def test_rotates_by_age_and_at_the_hour(tmp_path: Path) -> None:
    clock = Clock(T0 + 3600 - 5)
    s = _spool(tmp_path, clock, max_segment_age=60)
    s.append(_line(1))
    clock.now += 10  # crosses into the next hour: the next append opens a new segment
    s.append(_line(2))
    assert len(s.closed_segments()) == 1
    clock.now += 30
    s.tick()
    assert len(s.closed_segments()) == 1
    clock.now += 31
    s.tick()
    keys = [segment_key("sessions/", "gw-a", p.name) for p in s.closed_segments()]
    assert [k.split("/")[2] for k in keys] == ["hour=08", "hour=09"]


def test_fsync_on_interval(tmp_path: Path) -> None:
    clock = Clock()
    s = _spool(tmp_path, clock, fsync_interval=1.0)
    s.append(_line(1))
    s.tick()
    assert s.fsyncs == 0
    clock.now += 1.5
    s.tick()
    assert s.fsyncs == 1
    clock.now += 1.5
    s.tick()  # nothing new written: no fsync
    assert s.fsyncs == 1


def test_quota_and_reservations(tmp_path: Path) -> None:
    line = _line(0, 200)
    s = _spool(tmp_path, max_bytes=3 * len(line) + 10)
    s.append(line)
    s.append(line)
    s.reserve(len(line))  # room for one more, held for a flow in flight
    with pytest.raises(SpoolFull):
        s.append(line)  # nobody else gets it
    with pytest.raises(SpoolFull):
        s.reserve(len(line))
    s.append(line, reserved=len(line))  # the holder's record fits
    assert s.records == 3
    s.unreserve(10_000)
    with pytest.raises(SpoolFull):
        s.append(line)


def test_shipping_frees_quota(tmp_path: Path) -> None:
    s = _spool(tmp_path, max_bytes=600)
    sink = Sink()
    up = Uploader(s, sink.put)
    for i in range(2):
        s.append(_line(i, 200))
    with pytest.raises(SpoolFull):
        s.append(_line(9, 200))
    s.rotate()
    up.ship_pending()
    s.append(_line(2, 200))
    assert s.used_bytes < 600


def test_short_write_leaves_no_torn_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = _spool(tmp_path)
    s.append(_line(1))
    real_write = spool_mod.os.write
    monkeypatch.setattr(spool_mod.os, "write", lambda fd, data: real_write(fd, data[:5]))
    with pytest.raises(OSError):
        s.append(_line(2))
    assert s.failing  # until a probe shows room again
    assert not s.probe()
    monkeypatch.setattr(spool_mod.os, "write", real_write)
    assert s.probe() and not s.failing
    s.append(_line(3))
    s.close()
    lines = [json.loads(x)["i"] for p in s.closed_segments() for x in p.read_bytes().splitlines()]
    assert lines == [1, 3]
    assert len(s.closed_segments()) == 2  # the failed segment was closed; the next line opened a new one


def test_read_segment_drops_torn_tail(tmp_path: Path) -> None:
    p = tmp_path / "x.jsonl"
    p.write_bytes(_line(1) + b'{"i": 2, "pa')
    assert read_segment(p) == _line(1)
    p.write_bytes(b'{"i"')
    assert read_segment(p) == b""


def test_leftovers_of_a_crash_ship_at_start(tmp_path: Path) -> None:
    crashed = _spool(tmp_path)
    for i in range(5):
        crashed.append(_line(i))
    # no close(): the process died with the segment open, and the kernel dropped its lock
    crashed.release()
    restarted = _spool(tmp_path)
    assert len(restarted.closed_segments()) == 1
    sink = Sink()
    Uploader(restarted, sink.put).ship_pending()
    assert sink.records() == [0, 1, 2, 3, 4]
    assert restarted.closed_segments() == []


def test_retries_with_backoff_until_s3_is_back(tmp_path: Path) -> None:
    s = _spool(tmp_path, max_segment_bytes=500)
    sink = Sink(fail=3)
    up = Uploader(s, sink.put, tick=0.01, backoff_base=0.01, backoff_max=0.05)
    up.start()
    for i in range(40):
        s.append(_line(i, 30))
    up.stop(flush_timeout=10)
    assert up.put_failures >= 3
    assert sink.records() == list(range(40))
    assert s.closed_segments() == []


def test_reshipping_a_segment_overwrites_the_same_key(tmp_path: Path) -> None:
    s = _spool(tmp_path)
    s.append(_line(1))
    s.close()
    (seg,) = s.closed_segments()
    copy = seg.read_bytes()
    sink = Sink()
    Uploader(s, sink.put).ship_pending()
    seg.write_bytes(copy)  # crash between the PUT and the delete: shipped again
    Uploader(s, sink.put).ship_pending()
    assert sink.attempts == 2 and len(sink.objects) == 1


@mock_aws
def test_ships_to_s3_with_boto3(tmp_path: Path) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="audit")
    s = _spool(tmp_path)
    up = Uploader(s, lambda key, body: s3.put_object(Bucket="audit", Key=key, Body=body) and None)
    for i in range(3):
        s.append(_line(i))
    s.close()
    up.ship_pending()
    (obj,) = s3.list_objects_v2(Bucket="audit")["Contents"]
    assert obj["Key"].startswith("sessions/dt=2027-01-15/hour=08/gw-a-")
    body = s3.get_object(Bucket="audit", Key=obj["Key"])["Body"].read()
    assert [json.loads(x)["i"] for x in gzip.decompress(body).splitlines()] == [0, 1, 2]


def test_reserve_never_waits_on_the_segment_lock(tmp_path: Path) -> None:
    """The event loop calls reserve(); a writer or fsync holding the segment lock must not stall it."""
    s = _spool(tmp_path)
    done = threading.Event()
    with s._lock:  # as if a rotation were fsyncing a slow disk
        t = threading.Thread(target=lambda: (s.reserve(10), done.set()))
        t.start()
        t.join(timeout=5)
        finished = done.is_set()
    t.join()
    assert finished


def test_try_append_writes_only_what_needs_no_wait(tmp_path: Path) -> None:
    """The event loop's fast path: one write into the open segment, never an open, rotation or lock wait."""
    clock = Clock(T0)
    line = _line(0, 80)
    s = _spool(tmp_path, clock, max_segment_bytes=3 * len(line))
    assert not s.try_append(line)  # no segment open yet: opening one is the writer thread's job
    assert s.used_bytes == 0 and s.records == 0
    s.append(line)
    assert s.try_append(_line(1, 80)) and s.records == 2
    assert not s.try_append(_line(2, 80) + b"x" * len(line))  # would rotate by size
    clock.now += 3600  # would rotate at the hour
    assert not s.try_append(_line(2, 80))
    clock.now -= 3600
    done: list[bool] = []
    with s._lock:  # the uploader rotating or syncing: the fast path gives up at once
        t = threading.Thread(target=lambda: done.append(s.try_append(_line(3, 80))))
        t.start()
        t.join(timeout=5)
    assert done == [False]
    assert s.records == 2 and s.used_bytes == 2 * len(line)
    s.close()
    lines = [json.loads(x)["i"] for p in s.closed_segments() for x in p.read_bytes().splitlines()]
    assert lines == [0, 1]


def test_try_append_keeps_the_quota_and_fails_like_append(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    line = _line(0, 200)
    s = _spool(tmp_path, max_bytes=3 * len(line) + 10)
    s.append(line)
    s.reserve(len(line))
    assert s.try_append(line, reserved=len(line))  # the holder's record fits
    with pytest.raises(SpoolFull):
        s.try_append(line + line)
    assert s.used_bytes == 2 * len(line)
    real_write = spool_mod.os.write
    fsyncs: list[int] = []
    real_fsync = spool_mod.os.fsync
    monkeypatch.setattr(spool_mod.os, "fsync", lambda fd: fsyncs.append(fd) or real_fsync(fd))
    monkeypatch.setattr(spool_mod.os, "write", lambda fd, data: real_write(fd, data[:5]))
    with pytest.raises(OSError):
        s.try_append(_line(1))
    assert s.failing and s.used_bytes == 2 * len(line)  # the torn line is gone and not counted
    assert fsyncs == [] and s.closed_segments() == []  # no fsync, no rotation on the event loop
    monkeypatch.setattr(spool_mod.os, "write", real_write)
    assert not s.try_append(_line(2))  # failing: left to `append` on the writer thread
    s.append(_line(3))  # off the loop: the failed segment is closed first, the line opens a new one
    assert len(s.closed_segments()) == 1 and fsyncs
    s.close()
    lines = [[json.loads(x)["i"] for x in p.read_bytes().splitlines()] for p in s.closed_segments()]
    assert lines == [[0, 0], [3]]


def test_a_second_gateway_cannot_take_a_live_spool(tmp_path: Path) -> None:
    live = _spool(tmp_path)
    live.append(_line(1))
    with pytest.raises(OSError, match="in use"):
        _spool(tmp_path)
    live.release()
    _spool(tmp_path)  # once the first one is gone, the directory is free


def test_admit_reserves_room_or_says_no(tmp_path: Path) -> None:
    s = _spool(tmp_path, max_bytes=1000)
    assert s.admit(600)
    assert not s.admit(600)  # over the quota with the first reservation held
    s.unreserve(600)
    s.failing = True
    assert not s.admit(1)  # the last write failed: nothing more is forwarded


def test_append_record_writes_the_line_and_hands_back_the_reservation_on_failure(tmp_path: Path) -> None:
    s = _spool(tmp_path, max_bytes=10_000)
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert s.admit(500)
        asyncio.run(spool_mod.append_record(s, lambda: _line(1), reserved=500, executor=pool))
        before = s.used_bytes
        assert before > 0 and s.admit(10_000 - before)  # the 500 went into the line's bytes
        s.unreserve(10_000 - before)

        def broken() -> bytes:
            raise ValueError("cannot build")

        assert s.admit(500)
        with pytest.raises(ValueError):
            asyncio.run(spool_mod.append_record(s, broken, reserved=500, executor=pool))
        assert s.admit(10_000 - before) and s.used_bytes == before  # the 500 came back, nothing written
