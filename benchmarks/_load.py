"""Helpers the load benchmarks share: rerank bodies, the upstream child process, keep-alive load.

`drive(...)` runs `concurrency` keep-alive httpx clients (threads) until `requests` requests were
sent; every answer that is not 200, and every transport error, is kept in `errors` (the load goes
on). The first `warmup` requests handed out are not measured.
"""

from __future__ import annotations

import json
import os
import queue
import random
import secrets
import ssl
import statistics
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from jitgate.devstack.aws import DEFAULT_REGION, FAKE_CREDENTIALS, Stack, local_broker, moto_server, seed
from jitgate.devstack.gateway import jitgate_options, write_bundle
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import CI_CLAIMS, policy_dict
from jitgate.policy import parse_policy

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


def rerank_body(docs: list[str]) -> bytes:
    """The gateway benchmarks' Cohere v2 rerank request: a four-word query from one of `docs`."""
    return json.dumps({"model": "rerank-v3.5", "query": " ".join(docs[3].split()[:4]), "documents": docs}).encode()


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


CI_SUB = "repo:acme/search-ranker:ref:refs/heads/main"


@dataclass(frozen=True)
class BenchStack:
    """What a gateway benchmark runs against: upstream, broker-minted token, gateway options."""

    upstream_url: str
    upstream_ca: Path
    token: str  # minted by the real broker for `cohere-test`
    jitgate_options: dict[str, str]  # `--set` options of a jitgate gateway against this stack
    bare_options: dict[str, str]  # a bare mitmdump trusting the upstream's CA
    aws: Stack  # the seeded moto resources (bucket, table, region)
    aws_endpoint: str
    broker_url: str


@contextmanager
def bench_stack(
    work: Path, real_key: str, limits: dict[str, int], *, ttl: str | None = None
) -> Iterator[BenchStack]:
    """moto server, OIDC issuer, the upstream, a policy whose grant carries `limits`, the broker."""
    with ExitStack() as stack:
        moto = stack.enter_context(moto_server())
        os.environ.update({"AWS_ENDPOINT_URL": moto.url, "AWS_DEFAULT_REGION": DEFAULT_REGION, **FAKE_CREDENTIALS})
        issuer = stack.enter_context(OidcIssuer())
        up_url, up_ca = stack.enter_context(upstream(work, real_key))
        doc = policy_dict(issuer.url, upstreams={"cohere-test": up_url})
        doc["grants"][0]["limits"] = limits  # type: ignore[index]
        policy_path = work / "policy.yaml"
        policy_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        policy = parse_policy(policy_path.read_text())
        fake = {c.credential.secret_id: "bench-" + secrets.token_urlsafe(18) for c in policy.connections.values()}
        fake[policy.connections["cohere-test"].credential.secret_id] = real_key
        aws = seed(moto.url, policy=policy, secrets=fake)
        broker = stack.enter_context(local_broker(aws, policy_path, cwd=REPO))
        answer = httpx.post(
            f"{broker.url}/v1/tokens",
            json={"connection": "cohere-test", **({"ttl": ttl} if ttl else {})},
            headers={"Authorization": f"Bearer {issuer.mint(CI_SUB, CI_CLAIMS)}"},
            timeout=30,
        )
        answer.raise_for_status()
        options = jitgate_options(
            policy=policy_path,
            jwks_url=f"{broker.url}/.well-known/jwks.json",
            table=aws.table,
            aws_endpoint=moto.url,
            region=aws.region,
            upstream_ca=up_ca,
        )
        bundle = write_bundle(work / "upstream-bundle.pem", up_ca.read_bytes())
        yield BenchStack(
            upstream_url=up_url,
            upstream_ca=up_ca,
            token=answer.json()["token"],
            jitgate_options=options,
            bare_options={"ssl_verify_upstream_trusted_ca": str(bundle)},
            aws=aws,
            aws_endpoint=moto.url,
            broker_url=broker.url,
        )


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


def drive_open(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    proxy: str | None,
    verify: Path,
    rate: float,
    requests: int,
    seed: int,
    clients: int = 32,
) -> Run:
    """Open loop: `requests` POSTs arriving at `rate` per second (Poisson: exponential gaps drawn
    from `seed`, so two paths get the same arrivals), whatever the answers' pace. Each latency runs
    from the request's scheduled arrival, so time spent queued behind a slow answer counts (no
    coordinated omission). `clients` keep-alive clients take the arrivals in turn."""
    ctx = ssl.create_default_context(cafile=str(verify))
    rng = random.Random(seed)
    offsets: list[float] = []
    t = 0.0
    for _ in range(requests):
        t += rng.expovariate(rate)
        offsets.append(t)
    run = Run()
    lock = threading.Lock()
    arrivals: queue.Queue[float | None] = queue.Queue()
    ready = threading.Barrier(clients + 1)

    def worker() -> None:
        with httpx.Client(proxy=proxy, verify=ctx, trust_env=False, timeout=60) as client:
            client.post(url, content=body, headers=headers)  # connect (CONNECT + TLS) before the clock
            ready.wait()
            while (due := arrivals.get()) is not None:
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                try:
                    resp = client.post(url, content=body, headers=headers)
                    status, text = resp.status_code, resp.text[:200]
                except httpx.HTTPError as exc:
                    status, text = 0, type(exc).__name__
                done = time.perf_counter()
                with lock:
                    run.sent += 1
                    if status != 200:
                        run.errors.append(f"{status} {text}")
                    else:
                        run.latencies.append(done - due)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for th in threads:
        th.start()
    ready.wait()
    start = time.perf_counter() + 0.05
    for off in offsets:  # all arrivals are queued up front: each waits for its time in a client
        arrivals.put(start + off)
    for _ in threads:
        arrivals.put(None)
    for th in threads:
        th.join()
    run.wall = time.perf_counter() - start
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
