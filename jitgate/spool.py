"""A durable local spool of session records, shipped to S3 by a background thread.

Records are appended as JSON lines to the open segment (`<dir>/open/`) with one `write(2)` each,
so a SIGKILL never loses a record whose write returned. The segment is fsync'd at a short
interval and at rotation; it rotates by size, by age and at the hour boundary, then moves to
`<dir>/closed/`. The uploader ships each closed segment, gzipped, to
`<prefix>dt=YYYY-MM-DD/hour=HH/<gateway>-<segment>.jsonl.gz` — the key depends only on the
segment, so a retry or a re-ship after a crash overwrites the same object — and deletes it
locally only after S3 said yes. Open segments left by a crash are closed and shipped at start.

A durable spool (`jitgate_durable_spool`: an EFS access point on Fargate, any directory on a VM)
outlives the task: what cannot be shipped by the end of a stop is moved there, under
`<durable>/<gateway>/`, and every gateway that shares the directory adopts and ships what others
left, at start and then periodically (a scale-in starts no new task), one gateway directory at a
time under that directory's lock. The key of a segment stays its first gateway's, so a segment
shipped twice (an adopter's put and a stopped gateway's late one) is the same object.

A quota bounds the spool (open + closed bytes): when S3 is down long enough to fill it, appends
fail with `SpoolFull` and the gateway refuses flows rather than forward them unrecorded.
Callers may reserve room for a record before forwarding a flow, so its record always fits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import fcntl
import functools
import logging
import os
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from isal import igzip

log = logging.getLogger(__name__)

_GATEWAY = re.compile(r"^[A-Za-z0-9._-]+$")  # a gateway id (option_checks.plain_name)
_SEGMENT = re.compile(r"^(?P<day>\d{8})T(?P<hour>\d{2})\d{4}\.\d{6}Z-\d{6}-[0-9a-f]{8}\.jsonl$")


class SpoolFull(OSError):
    """The spool quota is reached: nothing more can be recorded until segments are shipped."""

    def __init__(self) -> None:
        super().__init__(errno.ENOSPC, "spool quota reached")


@dataclass(frozen=True)
class SpoolConfig:
    directory: Path
    gateway: str
    max_segment_bytes: int = 8 * 1024 * 1024
    max_segment_age: float = 60.0
    fsync_interval: float = 1.0
    max_bytes: int = 1024 * 1024 * 1024
    probe_bytes: int = 128 * 1024  # what a failing spool must take again before flows pass


def segment_key(prefix: str, gateway: str, segment: str) -> str:
    """The S3 key of a closed segment: Hive partitions from the segment's opening hour (UTC)."""
    m = _SEGMENT.match(segment)
    if m is None:
        raise ValueError(f"not a segment name: {segment!r}")
    day = m.group("day")
    stem = segment.removesuffix(".jsonl")
    return f"{prefix}dt={day[:4]}-{day[4:6]}-{day[6:]}/hour={m.group('hour')}/{gateway}-{stem}.jsonl.gz"


def _segment_name(now: float, seq: int) -> str:
    """Sorts by opening time then sequence; the random part keeps restarted gateways apart."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}-{seq % 1_000_000:06d}-{secrets.token_hex(4)}.jsonl"


def _hour(now: float) -> int:
    return int(now // 3600)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_PART = ".part"  # a segment being copied into the durable spool: complete once renamed


def _move_durably(src: Path, dst: Path) -> None:
    """`src` to `dst`, on disk at `dst` before it is gone from `src`: a rename on one file system,
    else copy to a `.part`, fsync, rename, fsync the directory, and only then unlink `src`."""
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        part = dst.with_name(dst.name + _PART)
        with src.open("rb") as fin, part.open("wb") as fout:
            while chunk := fin.read(1 << 20):
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(part, dst)
        _fsync_dir(dst.parent)
        src.unlink()
        _fsync_dir(src.parent)
        return
    _fsync_dir(dst.parent)
    _fsync_dir(src.parent)


@contextlib.contextmanager
def _locked_home(home: Path, *, blocking: bool) -> Iterator[bool]:
    """Hold `home/.lock` (flock: the kernel drops it when its holder dies; on EFS, NFSv4.1 leases
    it, and it lapses with a dead client). Yields False when another process holds it and
    `blocking` is off, or `home` is gone. A lock file unlinked by an adopter that emptied `home`
    while this one waited is no lock: then try again on the new one."""
    while True:
        if blocking:
            home.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(home / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            if blocking:
                continue
            yield False
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                same = os.stat(home / ".lock").st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                yield True
                return
        finally:
            os.close(fd)
        if not blocking:
            yield False
            return


def _segments_left_in(home: Path) -> list[Path]:
    """A stopped gateway's segments in the durable spool: whole ones, and `.part` copies a kill
    cut short (their complete lines are all that is left of those records)."""
    return sorted(
        p for p in home.iterdir()
        if _SEGMENT.match(p.name.removesuffix(_PART)) and p.is_file()
    )


def adopt(
    durable: Path, ship: Callable[[str, Path, str], None], *, stopping: Callable[[], bool] = lambda: False
) -> int:
    """Ship, through `ship(gateway, path, segment_name)`, every segment stopped gateways left in
    `durable`; each gateway's directory under its lock (one busy now is left for later), each
    segment removed once shipped, the directory removed once empty. The first failure passes;
    once `stopping()` says so, nothing more is started (this gateway's own stop comes first)."""
    count = 0
    try:
        homes = sorted(p for p in durable.iterdir() if p.is_dir() and _GATEWAY.match(p.name))
    except FileNotFoundError:
        return 0
    for home in homes:
        with _locked_home(home, blocking=False) as held:
            if not held:
                continue
            for path in _segments_left_in(home):
                if stopping():
                    return count
                ship(home.name, path, path.name.removesuffix(_PART))
                path.unlink()
                count += 1
            _fsync_dir(home)
            if not _segments_left_in(home):
                # Unlinked while held: a depositor waiting on this lock file sees it gone and retries.
                (home / ".lock").unlink(missing_ok=True)
                with contextlib.suppress(OSError):  # something else arrived in it: kept for later
                    home.rmdir()
    return count


def check_durable(path: Path) -> None:
    """Raise OSError unless the durable spool takes a file now: a stop is too late to find out."""
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".probe-{os.getpid()}-{secrets.token_hex(4)}"
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    probe.unlink()


class Spool:
    """The writer half: append, fsync, rotate, quota. Thread-safe; the clock is passed in."""

    def __init__(self, config: SpoolConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        # Two locks: `_lock` guards the open segment (held during writes and rotation; the event
        # loop only ever tries it, in `try_append`); `_quota` guards the byte counts and is never
        # held across IO, so `reserve()` on the proxy's event loop never waits on the disk.
        self._lock = threading.Lock()
        self._quota = threading.Lock()
        self._open_dir = config.directory / "open"
        self._closed_dir = config.directory / "closed"
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._name = ""
        self._seq = 0
        self._size = 0
        self._opened_at = 0.0
        self._dirty = False
        self._rotate_due = False  # a failed write on the fast path: rotate off the event loop
        self._synced_at = 0.0
        self._used = 0  # bytes on disk: open + closed segments
        self._reserved = 0
        self.records = 0
        self.fsyncs = 0
        # True after a write failed (disk full, I/O error) until `probe()` succeeds.
        self.failing = False

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Lock the directory, then close every segment left open by a previous process.

        The lock (flock, released by the kernel when the process dies, even by SIGKILL) keeps a
        second gateway from taking over segments the first one is still writing.
        """
        self._open_dir.mkdir(parents=True, exist_ok=True)
        self._closed_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.config.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock_fd)
            raise OSError(errno.EBUSY, "spool directory is in use by another process") from None
        self._lock_fd = lock_fd
        with self._lock:
            for leftover in sorted(self._open_dir.glob("*.jsonl")):
                os.replace(leftover, self._closed_dir / leftover.name)
            _fsync_dir(self._closed_dir)
            with self._quota:
                self._used = sum(p.stat().st_size for p in self._closed_dir.glob("*.jsonl"))

    def close(self) -> None:
        """Rotate the open segment so the uploader can ship it."""
        with self._lock:
            self._rotate_locked()

    def release(self) -> None:
        """Give the directory up (after the last append and the last upload)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ---- quota -------------------------------------------------------------------------
    @property
    def used_bytes(self) -> int:
        return self._used

    def reserve(self, n: int) -> None:
        """Hold `n` bytes of quota for a record to be appended later; SpoolFull if they are not there."""
        with self._quota:
            if self._used + self._reserved + n > self.config.max_bytes:
                raise SpoolFull()
            self._reserved += n

    def unreserve(self, n: int) -> None:
        with self._quota:
            self._reserved = max(0, self._reserved - n)

    def admit(self, n: int) -> bool:
        """Reserve `n` bytes for one flow's record before the flow goes on; False when the spool
        cannot take it (the last write failed, the quota is reached, the disk fails)."""
        try:
            if self.failing:  # do not forward what may not be recorded
                return False
            self.reserve(n)
        except OSError:
            return False
        return True

    # ---- writing -----------------------------------------------------------------------
    def _claim(self, n: int, reserved: int) -> None:
        """Count `n` bytes as used (given back by the caller if the write fails); or SpoolFull."""
        with self._quota:
            self._reserved = max(0, self._reserved - reserved)
            if self._used + self._reserved + n > self.config.max_bytes:
                raise SpoolFull()
            self._used += n

    def _write_locked(self, line: bytes, *, rotate_on_failure: bool = True) -> None:
        assert self._fd is not None
        n = len(line)
        try:
            written = os.write(self._fd, line)
            if written != n:
                raise OSError(errno.ENOSPC, "short write to spool")
        except OSError:
            os.ftruncate(self._fd, self._size)  # a torn line would poison the segment
            # The disk said no: flows are refused until a probe shows room for a record
            # again, and the next line goes to a fresh segment (a per-file limit ends here).
            # Rotating fsyncs: from the event loop's fast path it is left to the next
            # `append` or `tick`, both off the loop.
            self.failing = True
            self._rotate_due = True
            if rotate_on_failure:
                with contextlib.suppress(OSError):
                    self._rotate_locked()
            raise
        self._size += n
        self._dirty = True
        self.records += 1

    def append(self, line: bytes, *, reserved: int = 0) -> None:
        """Append one complete JSON line; on any failure nothing of it stays in the segment."""
        n = len(line)
        self._claim(n, reserved)
        try:
            with self._lock:
                now = self._clock()
                if self._fd is not None and (
                    self._rotate_due
                    or self._size + n > self.config.max_segment_bytes
                    or _hour(now) != _hour(self._opened_at)
                ):
                    self._rotate_locked()
                if self._fd is None:
                    self._open_locked(now)
                self._write_locked(line)
        except BaseException:
            with self._quota:
                self._used -= n
            raise

    def try_append(self, line: bytes, *, reserved: int = 0) -> bool:
        """`append` without waiting: True when the line was written here and now.

        False, with nothing done, when the segment is busy (the uploader rotating or syncing it),
        when this line would rotate or open a segment (an fsync), or after a failed write: the
        caller then runs `append` off the event loop. What this does is one `write(2)` into the
        page cache, so the proxy's event loop can call it; SpoolFull and OSError as `append`.
        """
        if not self._lock.acquire(blocking=False):
            return False
        try:
            n = len(line)
            if (
                self._fd is None
                or self.failing
                or self._size + n > self.config.max_segment_bytes
                or _hour(self._clock()) != _hour(self._opened_at)
            ):
                return False
            self._claim(n, reserved)
            try:
                self._write_locked(line, rotate_on_failure=False)
            except BaseException:
                with self._quota:
                    self._used -= n
                raise
            return True
        finally:
            self._lock.release()

    def probe(self) -> bool:
        """Whether the disk takes a record-sized write again; clears `failing` if it does.

        A small refusal record fitting in the last bytes of a disk must not count as healthy,
        so the probe writes and fsyncs `probe_bytes` to a scratch file, then removes it.
        """
        path = self.config.directory / ".probe"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                data = bytes(self.config.probe_bytes)
                if os.write(fd, data) != len(data):
                    return False
                os.fsync(fd)
            finally:
                os.close(fd)
                path.unlink(missing_ok=True)
        except OSError:
            return False
        self.failing = False
        return True

    def tick(self) -> None:
        """Called often by the uploader thread: fsync on the interval, rotate by age.

        The interval fsync runs on a duplicate of the descriptor outside the lock, so appends
        (and the answers waiting on them) do not queue behind a slow disk.
        """
        if self.failing:
            self.probe()
        dup: int | None = None
        with self._lock:
            if self._fd is None:
                return
            now = self._clock()
            if (
                self._rotate_due
                or now - self._opened_at >= self.config.max_segment_age
                or _hour(now) != _hour(self._opened_at)
            ):
                self._rotate_locked()
            elif self._dirty and now - self._synced_at >= self.config.fsync_interval:
                dup = os.dup(self._fd)
                self._dirty = False
                self._synced_at = now
        if dup is not None:
            try:
                os.fsync(dup)
                self.fsyncs += 1
            finally:
                os.close(dup)

    def rotate(self) -> None:
        with self._lock:
            self._rotate_locked()

    def _open_locked(self, now: float) -> None:
        self._seq += 1
        self._name = _segment_name(now, self._seq)
        self._fd = os.open(self._open_dir / self._name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = 0
        self._opened_at = now
        self._synced_at = now
        self._dirty = False

    def _rotate_locked(self) -> None:
        self._rotate_due = False
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
            self.fsyncs += 1
        finally:
            os.close(fd)
        src = self._open_dir / self._name
        if self._size == 0:
            src.unlink(missing_ok=True)
            return
        os.replace(src, self._closed_dir / self._name)
        _fsync_dir(self._closed_dir)

    # ---- the uploader's side -----------------------------------------------------------
    def closed_segments(self) -> list[Path]:
        return sorted(self._closed_dir.glob("*.jsonl"))

    def shipped(self, path: Path) -> None:
        """Forget a segment S3 has accepted."""
        size = path.stat().st_size
        path.unlink()
        with self._quota:
            self._used = max(0, self._used - size)

    def deposit(self, durable: Path) -> int:
        """Move every closed segment to `durable/<gateway>/` (the last thing a stop does when S3
        would not take them), under that directory's lock so no adopter reads a half-moved one.
        Returns how many moved; a segment that cannot be moved stays here (and the error passes)."""
        home = durable / self.config.gateway
        moved = 0
        with _locked_home(home, blocking=True) as held:
            assert held
            for path in self.closed_segments():
                size = path.stat().st_size
                _move_durably(path, home / path.name)
                with self._quota:
                    self._used = max(0, self._used - size)
                moved += 1
        return moved


def read_segment(path: Path) -> bytes:
    """A segment's complete lines; a torn last line (power loss mid-write) is dropped."""
    data = path.read_bytes()
    end = data.rfind(b"\n")
    return data[: end + 1] if end >= 0 else b""


Put = Callable[[str, bytes], None]

# gzip level of a shipped segment, compressed by ISA-L (isal's igzip: the same gzip format, what
# stdlib `gzip`, Athena and DuckDB read). A segment of rerank records is mostly SHA-256 hex (the
# documents' fingerprints), which no level packs much below 2:1. On 8 MB of such records, on the
# 2-core test machine: zlib level 1 cost 279 us of gateway CPU per record for 2.06:1, ISA-L level 1
# 66 us for 2.22:1 (zlib level 6, the earlier default, cost ~2.8x zlib level 1; docs/performance.md).
SEGMENT_GZIP_LEVEL = 1


async def append_record(
    spool: Spool, build: Callable[[], bytes], *, reserved: int, executor: concurrent.futures.Executor
) -> None:
    """Build one record line (CPU, here) and append it, handing back `reserved` when either fails.

    One write(2) into the page cache on the running event loop; a write that would wait (the
    segment busy, a rotation's fsync due, a failing disk) goes to `executor` instead, so the loop
    never waits on the disk. Errors pass through (the caller decides what the flow gets)."""
    try:
        line = build()
        if not spool.try_append(line, reserved=reserved):
            await asyncio.get_running_loop().run_in_executor(
                executor, functools.partial(spool.append, line, reserved=reserved)
            )
    except Exception:
        if reserved:
            spool.unreserve(reserved)
        raise


class Uploader:
    """Ships closed segments with retries and capped exponential backoff, on its own thread."""

    def __init__(
        self,
        spool: Spool,
        put: Put | None,
        *,
        prefix: str = "sessions/",
        tick: float = 0.2,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        durable: Path | None = None,
        adopt_every: float = 30.0,
    ) -> None:
        self.spool = spool
        self._put = put
        self.prefix = prefix
        self.durable = durable
        self._adopt_every = adopt_every
        self.adopted = 0
        self.deposited = 0
        self._tick = tick
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.puts = 0
        self.put_failures = 0
        self.bytes_shipped = 0

    def ship_pending(self) -> int:
        """Ship every closed segment once, oldest first; raise on the first failure."""
        count = 0
        if self._put is None:  # no bucket: segments stay in the spool
            return 0
        for path in self.spool.closed_segments():
            self._ship(self.spool.config.gateway, path, path.name)
            self.spool.shipped(path)
            count += 1
        return count

    def _ship(self, gateway: str, path: Path, segment: str) -> None:
        """Put one segment's complete lines, gzipped, at its key (nothing for an empty one)."""
        assert self._put is not None
        body = read_segment(path)
        if not body:
            return
        key = segment_key(self.prefix, gateway, segment)
        payload = igzip.compress(body, compresslevel=SEGMENT_GZIP_LEVEL)
        try:
            self._put(key, payload)
        except Exception:
            self.put_failures += 1
            raise
        self.puts += 1
        self.bytes_shipped += len(payload)

    def adopt_durable(self) -> int:
        """Ship what stopped gateways left in the durable spool (none configured: nothing)."""
        if self.durable is None or self._put is None:
            return 0
        count = adopt(self.durable, self._ship, stopping=self._stop.is_set)
        if count:
            log.info("shipped %d segments other gateways left in the durable spool", count)
        self.adopted += count
        return count

    def _delay(self, failures: int) -> float:
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** min(failures - 1, 16))
        return random.uniform(ceiling / 2, ceiling)

    def _run(self) -> None:
        failures = 0
        next_try = 0.0
        next_adopt = 0.0  # at start, then every `adopt_every` seconds while S3 takes segments
        while not self._stop.is_set():
            try:
                self.spool.tick()
            except OSError:
                log.exception("spool fsync/rotation failed")
            if time.monotonic() >= next_try:
                try:
                    self.ship_pending()
                    if time.monotonic() >= next_adopt:
                        self.adopt_durable()
                        next_adopt = time.monotonic() + self._adopt_every
                    failures = 0
                except Exception as exc:  # any S3/network failure: keep the segment, back off
                    failures += 1
                    next_try = time.monotonic() + self._delay(failures)
                    log.warning(
                        "segment upload failed (%s); retry %d in %.1fs",
                        type(exc).__name__,
                        failures,
                        next_try - time.monotonic(),
                    )
            self._stop.wait(self._tick)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="jitgate-spool-uploader", daemon=True)
        self._thread.start()

    def stop(self, *, flush_timeout: float = 5.0, join_timeout: float = 60.0) -> None:
        """Close the open segment and try to ship what is left; wait at most `join_timeout` for an
        upload in flight, and ship until `flush_timeout` after this call at the latest.

        An upload that outlasts `join_timeout` is left running (a daemon thread: the process exits
        under it) and nothing more is shipped from here. What is not shipped then goes to the
        durable spool if there is one (an adopter ships it; the late upload, if it lands, put the
        same key), else it stays in the spool, closed, and the next start ships it.
        """
        deadline = time.monotonic() + flush_timeout
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=join_timeout)  # an upload in flight ends within the client's timeouts
            if self._thread.is_alive():
                log.warning("an upload outlasted %.0fs", join_timeout)
                self.spool.close()
                self._leave_unshipped()
                return
        self.spool.close()
        if self._put is None:
            self.spool.release()
            return
        while self.spool.closed_segments() and time.monotonic() < deadline:
            try:
                self.ship_pending()
            except Exception:  # left on disk: the durable spool or the next start ships it
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        if self.spool.closed_segments():
            log.warning("segments not shipped in %.0fs", flush_timeout)
        self._leave_unshipped()
        self.spool.release()

    def _leave_unshipped(self) -> None:
        """Move what is left to the durable spool (if any), else say it stays in this spool."""
        left = len(self.spool.closed_segments())
        if not left:
            return
        if self.durable is not None and self._put is not None:
            try:
                self.deposited += self.spool.deposit(self.durable)
            except OSError as exc:
                log.error("moving segments to the durable spool failed (%s)", type(exc).__name__)
            else:
                log.warning("%d unshipped segments moved to the durable spool for another gateway to ship", left)
                return
        log.warning("%d segments stay in the spool", len(self.spool.closed_segments()))
