"""Metrics and health of this gateway worker (jitgate/metrics.py has the metrics and the rules).

Last in the chain: its request hook runs after every other one (and after any approval wait), so
the time from the end of the client's request to that hook is what the request hooks added; its
response hook, likewise, follows every other response hook. It counts each finished flow by
bounded labels (policy connection and operation, decision, error code, status class) and its
findings by type, and serves `/metrics`, `/healthz` and `/readyz` on `jitgate_metrics_port`.
The other addons are read, never changed: the revocation list and JWKS of token_gate, the
secrets credential_inject holds, the holds of approval_hold, the spool of session_recorder.
Its hooks never raise: a metric that cannot be counted changes no flow.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
import weakref
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader

from addon import meta, settings
from jitgate import metrics
from jitgate.records import DECISIONS, Decision

logger = logging.getLogger(__name__)

_WAITED = frozenset({Decision.HELD.value, Decision.APPROVED.value, Decision.DENIED.value})
TICK_SECONDS = 1.0


class Metrics:
    def __init__(
        self,
        *,
        token_gate: Any = None,
        credential_inject: Any = None,
        approval_hold: Any = None,
        session_recorder: Any = None,
    ) -> None:
        self._gate = token_gate
        self._inject = credential_inject
        self._hold = approval_hold
        self._recorder = session_recorder
        # flow -> time.time() after its last request hook (beside the flow: never in its metadata)
        self._request_done: weakref.WeakKeyDictionary[http.HTTPFlow, float] = weakref.WeakKeyDictionary()
        self.server: metrics.HealthServer | None = None
        self._codes = metrics.error_codes()
        self._connections: frozenset[str] = frozenset()
        self._operations: frozenset[str] = frozenset()
        self._policy = ""  # jitgate_policy, read by the metrics thread
        self._stop = threading.Event()

    def load(self, loader: Loader) -> None:
        settings.add_options(
            loader, "jitgate_policy", "jitgate_metrics_port", "jitgate_metrics_host", "jitgate_reuse_port"
        )

    def configure(self, updated: set[str]) -> None:
        if "jitgate_policy" in updated and ctx.options.jitgate_policy:
            self._policy = ctx.options.jitgate_policy
            policy = settings.policy_from(ctx.options.jitgate_policy)
            self._connections = frozenset(policy.connections)
            self._operations = frozenset(op for c in policy.connections.values() for op in c.operation_names)
        if ctx.options.jitgate_metrics_port < -1 or ctx.options.jitgate_metrics_port > 65535:
            raise settings.options_error("jitgate_metrics_port must be -1 (off), 0 (any) or a port")

    def running(self) -> None:
        port = ctx.options.jitgate_metrics_port
        if port < 0 or self.server is not None:
            return
        host = ctx.options.jitgate_metrics_host
        self.server = metrics.HealthServer(host, port, self.snapshot, reuse_port=ctx.options.jitgate_reuse_port)
        self.server.start()
        self._stop.clear()
        threading.Thread(target=self._ticker, name="jitgate-metrics-tick", daemon=True).start()
        # start_gateway and the tests read the port from this line (port 0: any free port).
        logger.warning("jitgate metrics listening at http://%s:%d", host, self.server.port)

    def done(self) -> None:
        self._stop.set()
        if self.server is not None:
            self.server.stop()
            self.server = None

    def _ticker(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            server = self.server
            if server is None:
                return
            try:
                server.tick()
            except Exception as exc:
                logger.warning("jitgate: metrics tick failed (%s)", type(exc).__name__)

    # -- the worker's state -----------------------------------------------------------------

    def snapshot(self) -> metrics.Snapshot:
        now_mono, now = time.monotonic(), time.time()
        gate, revocations = self._gate, getattr(self._gate, "revocations", None)
        refreshed = getattr(revocations, "refreshed_at", -math.inf)
        staleness = getattr(revocations, "staleness", 0.0)
        verifier = getattr(gate, "verifier", None)
        keys_ok = bool(verifier.keys_loaded) if verifier is not None else False
        keys_at = now_mono - verifier.keys_age() if verifier is not None and keys_ok else -math.inf
        secrets = getattr(self._inject, "secrets", None)
        secret_age = secrets.memo.oldest_age() if secrets is not None else 0.0
        spool = getattr(self._recorder, "spool", None)
        uploader = getattr(self._recorder, "uploader", None)
        segments: list[float] = []
        used = 0
        writable = False
        if spool is not None:
            for path in spool.closed_segments():
                with contextlib.suppress(OSError):  # shipped meanwhile
                    segments.append(path.stat().st_mtime)
            used = spool.used_bytes
            writable = not spool.failing and os.access(spool.config.directory, os.W_OK)
        return metrics.Snapshot(
            revocation_age=metrics.age(now_mono, refreshed),
            revocation_staleness=staleness,
            jwks_loaded=keys_ok,
            jwks_age=metrics.age(now_mono, keys_at),
            secret_cache_age=max(0.0, secret_age),
            spool_writable=writable,
            spool_segments=len(segments),
            spool_bytes=used,
            spool_oldest_age=metrics.oldest_age(now, segments),
            held=len(getattr(self._hold, "held", {}) or {}),
            ship_failures=int(getattr(uploader, "put_failures", 0)),
            policy_current=settings.POLICIES.trouble(self._policy) is None,
        )

    # -- flows ------------------------------------------------------------------------------

    def request(self, flow: http.HTTPFlow) -> None:
        self._request_done[flow] = time.time()

    def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None and flow.response.status_code != 200:
            self._count(flow)  # a tunnel the gateway refused: it never becomes a request

    def response(self, flow: http.HTTPFlow) -> None:
        self._count(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._count(flow)

    def _count(self, flow: http.HTTPFlow) -> None:
        try:
            self._observe(flow)
        except Exception as exc:
            logger.warning("jitgate: a flow's metrics were not counted (%s)", type(exc).__name__)

    def _observe(self, flow: http.HTTPFlow) -> None:
        state = meta.state_of(flow)
        decision = str(state.decision) if state.decision is not None else None
        answered = state.error is not None or (flow.response is not None and flow.server_conn.timestamp_start is None)
        metrics.REQUESTS.labels(
            connection=metrics.bounded(state.connection_name, self._connections),
            operation=metrics.bounded(state.operation, self._operations),
            decision=metrics.bounded(decision or Decision.ALLOWED.value, DECISIONS),
            code=metrics.bounded(state.error, self._codes),
            status=metrics.status_class(flow.response.status_code if flow.response is not None else None),
        ).inc()
        for finding in state.findings:
            if isinstance(finding, dict):
                metrics.FINDINGS.labels(type=metrics.finding_type(finding.get("type"))).inc()
        self._observe_added(flow, decision, answered)

    def _observe_added(self, flow: http.HTTPFlow, decision: object, answered: bool) -> None:
        now = time.time()
        req = flow.request
        done = self._request_done.get(flow)
        added = 0.0
        if decision not in _WAITED and req.timestamp_end is not None:
            added += max(0.0, (done if isinstance(done, float) else now) - req.timestamp_end)
        resp = flow.response
        if not answered and resp is not None and resp.timestamp_end is not None:
            added += max(0.0, now - resp.timestamp_end)
        metrics.ADDED.labels(path="answered" if answered else "forwarded").observe(added)
