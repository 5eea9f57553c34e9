"""`jitgate gateway --workers N`: N mitmdump processes on one listen address, and their supervisor.

Each worker is a whole gateway (mitmdump + the addon chain) with a gateway id and a spool of its
own (`<id>-w<i>`, `<spool>/<id>-w<i>`), listening with SO_REUSEPORT (addon/reuse_port.py) on the
same address: the kernel spreads new connections over the workers. Request limits and
revocations already hold across processes (DynamoDB). The metrics port is shared the same way,
and PROMETHEUS_MULTIPROC_DIR makes any worker's `/metrics` answer for all of them.

The supervisor restarts a worker that exits (with a backoff that doubles up to `backoff_max`,
reset once a worker stayed up `steady` seconds) and, on SIGTERM or SIGINT, sends SIGTERM to every
worker (each drains as a single gateway does) and kills what is left after `drain_timeout`.
Port 0 is resolved once by the supervisor, which keeps the port bound (not listening) so no other
program takes it between worker restarts.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import multiprocess


def reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """A socket bound to (`host`, `port`) with SO_REUSEPORT, never listening, and its port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock, int(sock.getsockname()[1])


def worker_id(base: str, index: int) -> str:
    return f"{base}-w{index}"


def backoff(failures: int, *, base: float, ceiling: float) -> float:
    """Seconds before the restart that follows `failures` quick exits in a row."""
    return float(min(ceiling, base * 2 ** max(0, failures - 1)))


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float = 0.0


_OUT_LOCK = threading.Lock()


def _relay(proc: subprocess.Popen[bytes]) -> None:
    """Copy a worker's output to ours line by line, each line written whole."""
    assert proc.stdout is not None
    for line in proc.stdout:
        with _OUT_LOCK:
            sys.stdout.buffer.write(line if line.endswith(b"\n") else line + b"\n")
            sys.stdout.flush()


@dataclass
class Supervisor:
    """Start with `start()`, then `run()` until `stop()` (or a signal, with `handle_signals()`)."""

    argv_for: Callable[[int], Sequence[str]]
    workers: int
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    steady: float = 30.0
    drain_timeout: float = 30.0
    say: Callable[[str], None] = print
    multiproc_dir: Path | None = None
    restarts: int = 0
    _slots: list[_Worker] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _own_dir: bool = False

    def start(self) -> Supervisor:
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.multiproc_dir is None:
            self.multiproc_dir = Path(tempfile.mkdtemp(prefix="jitgate-metrics-"))
            self._own_dir = True
        else:  # values of an earlier run would be summed with ours
            shutil.rmtree(self.multiproc_dir, ignore_errors=True)
            self.multiproc_dir.mkdir(parents=True)
        self._slots = [_Worker(i) for i in range(self.workers)]
        for slot in self._slots:
            self._spawn(slot)
        return self

    def pids(self) -> list[int]:
        return [s.proc.pid for s in self._slots if s.proc is not None and s.proc.poll() is None]

    def _spawn(self, slot: _Worker) -> None:
        env = {**self.env, "PROMETHEUS_MULTIPROC_DIR": str(self.multiproc_dir), "PYTHONUNBUFFERED": "1"}
        # Each worker's output through a pipe of its own, relayed a whole line at a time: written
        # straight to one shared stdout, two workers' lines interleaved mid-line (two JSON log
        # objects on one line).
        slot.proc = subprocess.Popen(
            list(self.argv_for(slot.index)), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        threading.Thread(target=_relay, args=(slot.proc,), name=f"jitgate-worker-{slot.index}-out", daemon=True).start()
        slot.started = time.monotonic()
        self.say(f"jitgate gateway: worker {slot.index} started (pid {slot.proc.pid})")

    def poll_once(self) -> None:
        """Restart what exited, when its backoff is over."""
        now = time.monotonic()
        for slot in self._slots:
            proc = slot.proc
            if proc is not None and proc.poll() is not None:
                multiprocess.mark_process_dead(proc.pid, str(self.multiproc_dir))  # type: ignore[no-untyped-call]
                slot.failures = 1 if now - slot.started >= self.steady else slot.failures + 1
                slot.restart_at = now + backoff(slot.failures, base=self.backoff_base, ceiling=self.backoff_max)
                self.say(
                    f"jitgate gateway: worker {slot.index} (pid {proc.pid}) exited with {proc.returncode}; "
                    f"restart in {slot.restart_at - now:.1f}s"
                )
                slot.proc = None
            if slot.proc is None and now >= slot.restart_at and not self._stop.is_set():
                self.restarts += 1
                self._spawn(slot)

    def run(self, interval: float = 0.2) -> None:
        while not self._stop.wait(interval):
            self.poll_once()
        self._shutdown()

    def stop(self) -> None:
        self._stop.set()

    def handle_signals(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop())

    def _shutdown(self) -> None:
        live = [s.proc for s in self._slots if s.proc is not None and s.proc.poll() is None]
        for proc in live:
            proc.terminate()  # each worker drains (in-flight flows, the spool) as a single gateway does
        deadline = time.monotonic() + self.drain_timeout
        for proc in live:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self.say("jitgate gateway: every worker stopped")
        if self._own_dir and self.multiproc_dir is not None:
            shutil.rmtree(self.multiproc_dir, ignore_errors=True)
