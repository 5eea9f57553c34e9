"""approval_hold: a risky request waits for a human before it goes upstream.

The connection's approval rules (jitgate.approvals.risk_reasons) mark a request as risky: a
named operation, a rerank over a document or byte threshold (bytes of the decoded body, whatever
its Content-Encoding), or an inspection finding whose profile action is `review`. Such a flow is
intercepted, a hold item with a masked summary (who, which token by jti, operation, host, path,
sizes, findings; never a body or a secret) is written to the shared table (pk="hold"), and one
background task per gateway polls the table for all of its holds at once. Approved: the flow
resumes. Denied: 403 `approval_denied`. No decision within `jitgate_approval_timeout`: the hold
is closed with a conditional write (so a late approval cannot land after it) and the answer is
403 `approval_timeout`. Other flows are never blocked; several gateways share the table, each
polling only its own holds.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader

from addon import meta, settings
from addon.body import NOT_JSON, json_body
from addon.respond import refuse
from jitgate import holds
from jitgate.approval_store import ApprovalStore
from jitgate.approvals import Approval, RequestFacts, State, risk_reasons, state_at
from jitgate.errors import ApprovalUnavailable, BodyNotDecodable
from jitgate.policy import Connection, Policy
from jitgate.records import Decision
from jitgate.state import revoked_among

logger = logging.getLogger(__name__)



@dataclass
class _Held:
    flow: http.HTTPFlow
    approval: Approval
    deadline: float  # monotonic


def request_facts(flow: http.HTTPFlow, conn: Connection, operation: str | None) -> RequestFacts:
    """The facts the approval rules judge (jitgate.holds.request_facts); raises ValueError for a
    body that does not decode. The body is parsed once per flow (addon/body.py)."""

    def parsed() -> Any:
        value = json_body(flow)
        return None if value is NOT_JSON else value

    raw, encoding = flow.request.raw_content or b"", flow.request.headers.get("content-encoding", "")
    return holds.request_facts(raw, encoding, conn, operation, parsed, meta.state_of(flow).findings)


class ApprovalHold:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        dynamodb: Any = None,
        sns: Any = None,
        aws: settings.AwsClients | None = None,
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
        self.held: dict[str, _Held] = {}
        self._poller: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- configuration ----------------------------------------------------------------------

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
            self._finish(hold_id, "expired")

    # -- the hook ---------------------------------------------------------------------------

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
            refuse(
                flow, ApprovalUnavailable("too many requests are waiting for approval; try again later"),
                decision=Decision.DENIED,
            )
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
            refuse(
                flow, ApprovalUnavailable("this request needs an approval, and the hold cannot be recorded"),
                decision=Decision.DENIED,
            )
            return
        flow.intercept()  # type: ignore[no-untyped-call]
        state.hold_id = approval.id
        state.decision = Decision.HELD
        self.held[approval.id] = _Held(flow, approval, self._monotonic() + self.timeout)
        logger.info("jitgate: held %s %s (%s) as %s", conn.name, operation, ",".join(reasons), approval.id)
        if self.topic:
            task = asyncio.get_running_loop().create_task(self._notify(approval))
            self._tasks.add(task)  # keep a reference until it finishes
            task.add_done_callback(self._tasks.discard)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll_loop())

    # -- background ---------------------------------------------------------------------------

    async def _notify(self, approval: Approval) -> None:
        await asyncio.to_thread(holds.publish_notice, self._sns, self.topic, approval)

    async def _poll_loop(self) -> None:
        while self.held:
            await asyncio.sleep(self.poll)
            await self.poll_once()

    async def poll_once(self) -> None:
        """Read every hold of this gateway once; resume, refuse or time out what is due."""
        if not self.held or self.store is None:
            return
        ids = list(self.held)
        try:
            found = await asyncio.to_thread(self.store.get_many, ids, now=self._clock())
        except Exception as exc:  # keep holding; the timeout still ends every hold
            logger.warning("jitgate: hold poll failed (%s)", type(exc).__name__)
            found = {}
        now, mono = self._clock(), self._monotonic()
        approved: list[str] = []
        for hold_id in ids:
            held = self.held.get(hold_id)
            if held is None:
                continue
            entry = found.get(hold_id)
            result = holds.outcome(state_at(entry[0], now) if entry is not None else None,
                                   past_deadline=mono >= held.deadline)
            if result == "approved":
                approved.append(hold_id)
            elif result == "denied":
                self._finish(hold_id, result)
            elif result == "close":
                self._finish(hold_id, await self._close(hold_id))
        if approved:
            await self._resume_approved(approved)

    async def _resume_approved(self, hold_ids: list[str]) -> None:
        """An approval is no pass for a token revoked or expired while its request waited."""
        jtis = {h: self.held[h].approval.summary.get("jti") for h in hold_ids if h in self.held}
        revoked: set[str] | None
        try:
            revoked = await asyncio.to_thread(
                revoked_among, self._dynamodb, self.table, {str(j) for j in jtis.values()}, now=self._clock()
            )
        except Exception as exc:
            logger.warning("jitgate: revocation check before resuming failed (%s)", type(exc).__name__)
            revoked = None
        now = self._clock()
        for hold_id, jti in jtis.items():
            held = self.held.get(hold_id)
            if held is None:
                continue
            error = holds.resume_error(meta.state_of(held.flow).claims, str(jti), revoked, now=now)
            if error is not None:
                self.held.pop(hold_id, None)
                meta.state_of(held.flow).decision = Decision.DENIED
                refuse(held.flow, error, extra={"approval_id": hold_id})
                held.flow.resume()  # type: ignore[no-untyped-call]
                continue
            self._finish(hold_id, "approved")

    async def _close(self, hold_id: str) -> State:
        """End an undecided hold in the table; a decision that landed first wins."""
        store = self.store
        assert store is not None
        return await asyncio.to_thread(holds.close_undecided, store, hold_id, self._clock)

    def _finish(self, hold_id: str, state: State) -> None:
        held = self.held.pop(hold_id, None)
        if held is None:
            return
        flow = held.flow
        meta.state_of(flow).decision, error = holds.ending(state, timeout=self.timeout)
        if error is not None:
            refuse(flow, error, extra={"approval_id": hold_id})
        logger.info("jitgate: hold %s ended: %s", hold_id, state)
        flow.resume()  # type: ignore[no-untyped-call]
