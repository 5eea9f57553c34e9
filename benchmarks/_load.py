"""Helpers the load benchmarks share: rerank bodies, the upstream child process, keep-alive load.

`drive(...)` runs `concurrency` keep-alive httpx clients (threads) until `requests` requests were
sent; every answer that is not 200, and every transport error, is kept in `errors` (the load goes
on). The first `warmup` requests handed out are not measured.
"""

from __future__ import annotations

import os
import random
import ssl
import statistics
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def documents(n: int, size: int, rng: random.Random) -> list[str]:
    vocab = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 10))) for _ in range(3000)]
    docs = []
    for _ in range(n):
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < size:
            words.append(rng.choice(vocab))
        docs.append(" ".join(words)[:size])
    return docs


@contextmanager
def upstream(work: Path, key: str) -> Iterator[tuple[str, Path]]:
    """The sample HTTPS upstream (BM25) in a child process: (base URL, its private CA file)."""
    ca = work / "upstream-ca.pem"
    env = {**os.environ, "JITGATE_UPSTREAM_KEYS": key}
    argv = [sys.executable, "-m", "jitgate.devstack.upstream", "--ca-out", str(ca), "--no-record"]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("https://"):
            raise RuntimeError(f"upstream did not start: {url!r}")
        yield url, ca
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)  # seconds, measured requests that got 200
    errors: list[str] = field(default_factory=list)  # "<status> <body start>" or the exception's type
    wall: float = 0.0  # seconds from the first measured request to the end
    sent: int = 0


def drive(
    url: str,
    body: Callable[[int], bytes],
    headers: dict[str, str],
    *,
    proxy: str | None,
    verify: Path,
    requests: int,
    concurrency: int,
    warmup: int = 0,
) -> Run:
    """Send `warmup + requests` POSTs of `body(i)` over `concurrency` keep-alive clients."""
    ctx = ssl.create_default_context(cafile=str(verify))
    run = Run()
    lock = threading.Lock()
    handed = [0]
    total = warmup + requests
    started = threading.Barrier(concurrency + 1)
    t0 = [0.0]

    def worker() -> None:
        with httpx.Client(proxy=proxy, verify=ctx, trust_env=False, timeout=60) as client:
            started.wait()
            while True:
                with lock:
                    if handed[0] >= total:
                        return
                    i = handed[0]
                    handed[0] += 1
                begin = time.perf_counter()
                try:
                    resp = client.post(url, content=body(i), headers=headers)
                    status, text = resp.status_code, resp.text[:200]
                except httpx.HTTPError as exc:
                    status, text = 0, type(exc).__name__
                elapsed = time.perf_counter() - begin
                with lock:
                    run.sent += 1
                    if status != 200:
                        run.errors.append(f"{status} {text}")
                    elif i >= warmup:
                        if not t0[0]:
                            t0[0] = begin
                        run.latencies.append(elapsed)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    started.wait()
    for t in threads:
        t.join()
    run.wall = time.perf_counter() - t0[0] if t0[0] else 0.0
    return run


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc): cost per request, not wall time."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summary(latencies: list[float], wall: float) -> dict[str, float]:
    ordered = sorted(latencies)
    if not ordered or wall <= 0:
        return {"rps": 0.0, "p50_ms": 0.0, "p99_ms": 0.0}
    return {
        "rps": round(len(ordered) / wall, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
    }
