"""approval_hold: a risky request waits for a human before it goes upstream.

The connection's approval rules (jitgate.approvals.risk_reasons) mark a request as risky: a
named operation, a rerank over a document or byte threshold (bytes of the decoded body, whatever
its Content-Encoding), or an inspection finding whose profile action is `review`. Such a flow is
intercepted, a hold item with a masked summary (who, which token by jti, operation, host, path,
sizes, findings; never a body or a secret) is written to the shared table (pk="hold"), and one
background task per gateway polls the table for all of its holds at once (addon/hold_flows.py),
ending each within `jitgate_approval_timeout`. Other flows are never blocked; several gateways
share the table, each polling only its own holds.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader

from addon import meta, settings, worker_health
from addon.hold_flows import Held, Poll, finish, request_facts
from addon.respond import refuse
from jitgate import holds
from jitgate.approval_store import ApprovalStore
from jitgate.approvals import risk_reasons
from jitgate.errors import ApprovalUnavailable, BodyNotDecodable
from jitgate.policy import Policy
from jitgate.records import Decision

logger = logging.getLogger(__name__)


class ApprovalHold:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        dynamodb: Any = None, sns: Any = None,
        aws: settings.AwsClients | None = None,
        parts: worker_health.WorkerParts | None = None,
    ) -> None:
        self._aws = aws or settings.AwsClients()
        self._clock = clock
        self._monotonic = monotonic
        self._dynamodb = dynamodb
        self._given_dynamodb = dynamodb is not None
        self._sns = sns
        self._given_sns = sns is not None
        self.policy: Policy | None = None
        self.store: ApprovalStore | None = None
        self.table = ""
        self.timeout = 120.0
        self.poll = 1.0
        self.max_held = 200
        self.topic = ""
        self.gateway = socket.gethostname()
        self.held: dict[str, Held] = {}
        worker_health.publish(parts, held=self.held)  # counted by metrics
        self._poller: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def load(self, loader: Loader) -> None:
        settings.add_options(loader, *settings.ApprovalHoldSettings.NAMES)

    def configure(self, updated: set[str]) -> None:
        if not updated & set(settings.ApprovalHoldSettings.NAMES):
            return
        opts = ctx.options
        s = settings.approval_hold(opts)
        self.policy, self.table, self.timeout, self.poll = s.policy, s.table, s.timeout, s.poll
        self.max_held, self.topic, self.gateway = s.max_held, s.topic, s.gateway or self.gateway
        if not self._given_dynamodb:
            self._dynamodb = self._aws.client("dynamodb", opts)
        if self.topic and not self._given_sns:
            self._sns = self._aws.client("sns", opts)
        self.store = ApprovalStore(self._dynamodb, self.table)

    def done(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        for hold_id in list(self.held):
            finish(self.held, hold_id, "expired", timeout=self.timeout)

    async def request(self, flow: http.HTTPFlow) -> None:
        if meta.refused(flow) or self.policy is None or self.store is None:
            return
        state = meta.state_of(flow)
        claims = state.claims
        if claims is None:
            return  # token_gate refuses such a flow; nothing here to hold
        # The token's connection (scope_guard's pick); never another one sharing the host.
        conn = state.connection_in(self.policy) or self.policy.connection_for_host(flow.request.host, claims.conn)
        if conn is None:
            return
        operation = state.operation
        try:
            facts = request_facts(flow, conn, operation)
        except ValueError:  # leak_guard refuses such a body first; should it not run, nothing passes
            flow.request.headers.pop("content-encoding", None)  # nothing after this decodes it (recorder)
            refuse(flow, BodyNotDecodable("the request body's content encoding cannot be decoded"))
            return
        reasons = risk_reasons(conn.approval, facts)
        if not reasons:
            return
        if len(self.held) >= self.max_held:
            busy = "too many requests are waiting for approval; try again later"
            refuse(flow, ApprovalUnavailable(busy), decision=Decision.DENIED)
            return
        now = self._clock()
        approval = holds.new_hold(
            self.policy, conn, claims, facts, reasons, method=flow.request.method, host=flow.request.pretty_host,
            path=flow.request.path, now=now, timeout=self.timeout, gateway=self.gateway, flow_id=flow.id,
            collection=state.collection,
        )
        try:
            await asyncio.to_thread(self.store.create, approval, now=now)
        except Exception:
            unrecorded = "this request needs an approval, and the hold cannot be recorded"
            refuse(flow, ApprovalUnavailable(unrecorded), decision=Decision.DENIED)
            return
        flow.intercept()  # type: ignore[no-untyped-call]
        state.hold_id = approval.id
        state.decision = Decision.HELD
        self.held[approval.id] = Held(flow, approval, self._monotonic() + self.timeout)
        logger.info("jitgate: held %s %s (%s) as %s", conn.name, operation, ",".join(reasons), approval.id)
        if self.topic:
            notice = asyncio.to_thread(holds.publish_notice, self._sns, self.topic, approval)
            task = asyncio.get_running_loop().create_task(notice)
            self._tasks.add(task)  # keep a reference until it finishes
            task.add_done_callback(self._tasks.discard)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_loop())

    async def _poll_loop(self) -> None:
        while self.held:
            await asyncio.sleep(self.poll)
            await self.poll_once()

    async def poll_once(self) -> None:
        """Read every hold of this gateway once; resume, refuse or time out what is due (addon/hold_flows.py)."""
        if not self.held or self.store is None:
            return
        await Poll(self.store, self._dynamodb, self.table, self.timeout, self._clock, self._monotonic).once(self.held)
