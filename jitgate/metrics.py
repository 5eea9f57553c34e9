"""The gateway's Prometheus metrics, its readiness rule and the endpoint that serves both.

One worker's state is read into a `Snapshot` (plain values: ages in seconds, counts); `publish`
writes it to the gauges and `readiness` says which checks pass. Counters and histograms move on
each flow (addon/metrics.py). Across `jitgate gateway --workers N`, prometheus_client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by jitgate/workers.py) keeps each worker's
values in files of its own and any worker's `/metrics` answers the sum (gauges: `livesum`,
`livemax`, `livemin` over live workers). Every label value comes from a bounded set (policy
connection names and operations, decisions, error codes, rule types): a value outside it is
`other`, so no secret, token, path or query ever becomes a label.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from jitgate import errors

OTHER = "other"
NONE = "none"
_TYPE = re.compile(r"[a-z][a-z0-9_]{0,39}")

REQUESTS = Counter(
    "jitgate_requests",
    "Flows the gateway finished, by connection, operation, decision, error code and HTTP status class.",
    ["connection", "operation", "decision", "code", "status"],
)
ADDED = Histogram(
    "jitgate_gateway_added_seconds",
    "Time the gateway added to a flow: request hooks (approval waits excluded) plus response hooks; "
    "path=forwarded for flows sent upstream, answered for flows the gateway answered itself.",
    ["path"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
FINDINGS = Counter("jitgate_findings", "Inspection findings, by type.", ["type"])
SHIP_FAILURES = Counter("jitgate_spool_ship_failures", "Failed uploads of spool segments to S3.")
SPOOL_SEGMENTS = Gauge(
    "jitgate_spool_backlog_segments", "Closed spool segments not yet shipped.", multiprocess_mode="livesum"
)
SPOOL_BYTES = Gauge(
    "jitgate_spool_backlog_bytes", "Bytes of spool segments on disk, not yet shipped.", multiprocess_mode="livesum"
)
SPOOL_OLDEST = Gauge(
    "jitgate_spool_oldest_segment_age_seconds",
    "Age of the oldest closed segment not yet shipped (0: none).",
    multiprocess_mode="livemax",
)
REVOCATION_AGE = Gauge(
    "jitgate_revocation_list_age_seconds",
    "Seconds since the last good revocation list refresh (+Inf: none yet).",
    multiprocess_mode="livemax",
)
JWKS_AGE = Gauge(
    "jitgate_jwks_age_seconds", "Seconds since the broker's JWKS was last fetched (+Inf: never).",
    multiprocess_mode="livemax",
)
SECRET_AGE = Gauge(
    "jitgate_secret_cache_age_seconds",
    "Age of the oldest upstream secret held in memory (0: none held).",
    multiprocess_mode="livemax",
)
HELD = Gauge("jitgate_held_requests", "Requests waiting for an approver.", multiprocess_mode="livesum")
READY = Gauge(
    "jitgate_ready", "1 when the check passes on every live worker.", ["check"], multiprocess_mode="livemin"
)

CHECKS = ("revocations_fresh", "spool_writable", "jwks_loaded")
# Not a check: a bad policy uploaded is seen by every task at once, and a fleet that fails its
# health checks together is taken out of the NLB and replaced by tasks that cannot start on it.
# The gateway runs on, fail closed, on the last good policy; /readyz and this gauge say so.
POLICY_CURRENT = Gauge(
    "jitgate_policy_current",
    "1 when the policy in use is the newest at jitgate_policy; 0 while that one is not valid (the last good one runs).",
    multiprocess_mode="livemin",
)


def error_codes() -> frozenset[str]:
    """Every stable code of jitgate/errors.py (a bounded set)."""
    seen: set[str] = set()
    todo: list[type[errors.JitgateError]] = [errors.JitgateError]
    while todo:
        cls = todo.pop()
        seen.add(cls.code)
        todo.extend(cls.__subclasses__())
    return frozenset(seen)


def bounded(value: object, allowed: Collection[str]) -> str:
    """`value` when it is one of `allowed`; `none` for no value; `other` for anything else."""
    if value is None or value == "":
        return NONE
    return value if isinstance(value, str) and value in allowed else OTHER


def finding_type(value: object) -> str:
    """A rule type (`aws_access_key`, `email`): lower-case words of at most 40 characters, else `other`."""
    return value if isinstance(value, str) and _TYPE.fullmatch(value) else OTHER


def status_class(status: int | None) -> str:
    return f"{status // 100}xx" if status is not None and 100 <= status <= 599 else NONE


@dataclass(frozen=True)
class Snapshot:
    """One worker's state at one moment: ages in seconds (`math.inf`: never), counts."""

    revocation_age: float
    revocation_staleness: float
    jwks_loaded: bool
    jwks_age: float
    secret_cache_age: float
    spool_writable: bool
    spool_segments: int
    spool_bytes: int
    spool_oldest_age: float
    held: int
    ship_failures: int
    policy_current: bool = True


def readiness(snap: Snapshot) -> dict[str, bool]:
    """The checks of `/readyz`: revocation list fresh, spool writable, JWKS loaded."""
    return {
        "revocations_fresh": snap.revocation_age <= snap.revocation_staleness,
        "spool_writable": snap.spool_writable,
        "jwks_loaded": snap.jwks_loaded,
    }


class Publisher:
    """Writes snapshots to the gauges; the S3 failure count goes to its counter as a difference."""

    def __init__(self) -> None:
        self._failures = 0
        self._lock = threading.Lock()

    def publish(self, snap: Snapshot) -> dict[str, bool]:
        with self._lock:
            if snap.ship_failures > self._failures:
                SHIP_FAILURES.inc(snap.ship_failures - self._failures)
            self._failures = max(self._failures, snap.ship_failures)
            REVOCATION_AGE.set(snap.revocation_age)
            JWKS_AGE.set(snap.jwks_age)
            SECRET_AGE.set(snap.secret_cache_age)
            SPOOL_SEGMENTS.set(snap.spool_segments)
            SPOOL_BYTES.set(snap.spool_bytes)
            SPOOL_OLDEST.set(snap.spool_oldest_age)
            HELD.set(snap.held)
            POLICY_CURRENT.set(1 if snap.policy_current else 0)
            checks = readiness(snap)
            for name, ok in checks.items():
                READY.labels(check=name).set(1 if ok else 0)
            return checks


def registry() -> CollectorRegistry:
    """Every worker's metrics in multiprocess mode, else this process's."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
    return merged


def fleet_ready(reg: CollectorRegistry) -> dict[str, bool]:
    """`jitgate_ready` per check as the registry holds it (the minimum over live workers)."""
    found: dict[str, bool] = {}
    for family in reg.collect():
        if family.name == "jitgate_ready":
            for sample in family.samples:
                check = sample.labels.get("check", "")
                found[check] = found.get(check, True) and sample.value >= 1
    return found


def fleet_policy_current(reg: CollectorRegistry) -> bool:
    """`jitgate_policy_current` as the registry holds it: False when any live worker says 0."""
    return all(
        sample.value >= 1 for family in reg.collect() if family.name == "jitgate_policy_current"
        for sample in family.samples
    )


def ready_answer(own: dict[str, bool], fleet: dict[str, bool], *, policy_current: bool = True) -> tuple[int, bytes]:
    """`/readyz`: 200 when this worker's checks and every live worker's pass, else 503; JSON either way,
    with `policy_current` (false: a newer policy is not valid, the last good one runs; see POLICY_CURRENT)."""
    checks = {name: own.get(name, False) and fleet.get(name, True) for name in CHECKS}
    ok = all(checks.values())
    body = {"ready": ok, "checks": checks, "policy_current": policy_current}
    return (200 if ok else 503), json.dumps(body, sort_keys=True).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    reuse_port = False

    def server_bind(self) -> None:
        if self.reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class HealthServer:
    """`/metrics`, `/healthz` and `/readyz` on a port of their own, in a daemon thread.

    `snapshot` reads the worker's state; it is published before each answer. With `reuse_port`
    the workers of one host share the port (each answer covers every live worker, see above).
    """

    def __init__(
        self, host: str, port: int, snapshot: Callable[[], Snapshot], *, reuse_port: bool = False
    ) -> None:
        self._snapshot = snapshot
        self.publisher = Publisher()
        server_cls = type("Server", (_Server,), {"reuse_port": reuse_port})
        self._server = server_cls((host, port), self._handler())
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="jitgate-metrics", daemon=True)

    def tick(self) -> dict[str, bool]:
        """Publish the worker's state now (also called on a timer, so other workers' answers see it)."""
        return self.publisher.publish(self._snapshot())

    def answer(self, path: str) -> tuple[int, str, bytes]:
        """Status, content type and body for a GET of `path` (the query is ignored)."""
        path = path.split("?", 1)[0]
        if path == "/healthz":
            return 200, "application/json", b'{"alive": true}'
        if path == "/readyz":
            own = self.tick()
            reg = registry()
            status, body = ready_answer(own, fleet_ready(reg), policy_current=fleet_policy_current(reg))
            return status, "application/json", body
        if path == "/metrics":
            self.tick()
            return 200, CONTENT_TYPE_LATEST, generate_latest(registry())
        return 404, "application/json", b'{"code": "not_found"}'

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                try:
                    status, ctype, body = server.answer(self.path)
                except Exception:  # an answer that cannot be built is no readiness
                    status, ctype, body = 503, "application/json", b'{"code": "internal_error"}'
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # no access log
                return

        return Handler

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def age(now: float, then: float) -> float:
    """Seconds from `then` to `now`; `math.inf` when `then` is minus infinity (never)."""
    return math.inf if math.isinf(then) else max(0.0, now - then)


def oldest_age(now: float, mtimes: Iterable[float]) -> float:
    return max((max(0.0, now - m) for m in mtimes), default=0.0)
