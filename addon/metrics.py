"""Metrics and health of this gateway worker (jitgate/metrics.py has the metrics and the rules).

Last in the chain: its request hook runs after every other one (and after any approval wait), so
the time from the end of the client's request to that hook is what the request hooks added; its
response hook, likewise, follows every other response hook. It counts each finished flow by
bounded labels (policy connection and operation, decision, error code, status class) and its
findings by type, and serves `/metrics`, `/healthz` and `/readyz` on `jitgate_metrics_port`.
It reads the parts the other addons publish (addon/worker_health.py's board), never an addon. Its hooks never raise.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader

from addon import meta, settings, worker_health
from jitgate import metrics
from jitgate.records import DECISIONS, Decision

logger = logging.getLogger(__name__)

_WAITED = frozenset({Decision.HELD, Decision.APPROVED, Decision.DENIED})
TICK_SECONDS = 1.0


class Metrics:
    def __init__(self, parts: worker_health.WorkerParts | None = None) -> None:
        self._parts = parts or worker_health.WorkerParts()
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
        return worker_health.snapshot(self._parts, policy=self._policy)

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
        decision = state.decision
        answered = state.error is not None or (flow.response is not None and flow.server_conn.timestamp_start is None)
        metrics.REQUESTS.labels(
            connection=metrics.bounded(state.connection_name, self._connections),
            operation=metrics.bounded(state.operation, self._operations),
            decision=metrics.bounded((decision or Decision.ALLOWED).value, DECISIONS),
            code=metrics.bounded(state.error, self._codes),
            status=metrics.status_class(flow.response.status_code if flow.response is not None else None),
        ).inc()
        for finding in state.findings:
            metrics.FINDINGS.labels(type=metrics.finding_type(finding.type)).inc()
        self._observe_added(flow, decision, answered)

    def _observe_added(self, flow: http.HTTPFlow, decision: Decision | None, answered: bool) -> None:
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
