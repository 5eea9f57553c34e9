"""approval_hold's held flows: what the rules judge, and the poll that resumes, refuses or times
them out (not an addon of the chain; the decisions are jitgate/holds.py's).

One poll reads every hold of this gateway at once. Approved: the flow resumes, unless its token
was revoked or expired while it waited. Denied: 403 `approval_denied`. No decision in time: the
hold is closed with a conditional write (a late approval cannot land after it), 403 `approval_timeout`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mitmproxy import http

from addon import meta
from addon.body import NOT_JSON, json_body
from addon.respond import refuse
from jitgate import holds
from jitgate.approval_store import ApprovalStore
from jitgate.approvals import Approval, RequestFacts, State, state_at
from jitgate.policy import Connection
from jitgate.records import Decision
from jitgate.state import revoked_among

logger = logging.getLogger(__name__)


@dataclass
class Held:
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


def finish(held: dict[str, Held], hold_id: str, state: State, *, timeout: float) -> None:
    """End a hold: its flow resumes, refused unless it was approved."""
    entry = held.pop(hold_id, None)
    if entry is None:
        return
    flow = entry.flow
    meta.state_of(flow).decision, error = holds.ending(state, timeout=timeout)
    if error is not None:
        refuse(flow, error, extra={"approval_id": hold_id})
    logger.info("jitgate: hold %s ended: %s", hold_id, state)
    flow.resume()  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class Poll:
    """One poll of this gateway's holds, with the table and clocks of the moment."""

    store: ApprovalStore
    dynamodb: Any
    table: str
    timeout: float
    clock: Callable[[], float]
    monotonic: Callable[[], float]

    async def once(self, held: dict[str, Held]) -> None:
        """Read every hold of this gateway once; resume, refuse or time out what is due."""
        ids = list(held)
        try:
            found = await asyncio.to_thread(self.store.get_many, ids, now=self.clock())
        except Exception as exc:  # keep holding; the timeout still ends every hold
            logger.warning("jitgate: hold poll failed (%s)", type(exc).__name__)
            found = {}
        now, mono = self.clock(), self.monotonic()
        approved: list[str] = []
        for hold_id in ids:
            entry = held.get(hold_id)
            if entry is None:
                continue
            item = found.get(hold_id)
            result = holds.outcome(state_at(item[0], now) if item is not None else None,
                                   past_deadline=mono >= entry.deadline)
            if result == "approved":
                approved.append(hold_id)
            elif result == "denied":
                finish(held, hold_id, result, timeout=self.timeout)
            elif result == "close":
                finish(held, hold_id, await self._close(hold_id), timeout=self.timeout)
        if approved:
            await self._resume_approved(held, approved)

    async def _resume_approved(self, held: dict[str, Held], hold_ids: list[str]) -> None:
        """An approval is no pass for a token revoked or expired while its request waited."""
        jtis = {h: held[h].approval.summary.get("jti") for h in hold_ids if h in held}
        revoked: set[str] | None
        try:
            revoked = await asyncio.to_thread(
                revoked_among, self.dynamodb, self.table, {str(j) for j in jtis.values()}, now=self.clock()
            )
        except Exception as exc:
            logger.warning("jitgate: revocation check before resuming failed (%s)", type(exc).__name__)
            revoked = None
        now = self.clock()
        for hold_id, jti in jtis.items():
            entry = held.get(hold_id)
            if entry is None:
                continue
            error = holds.resume_error(meta.state_of(entry.flow).claims, str(jti), revoked, now=now)
            if error is not None:
                held.pop(hold_id, None)
                meta.state_of(entry.flow).decision = Decision.DENIED
                refuse(entry.flow, error, extra={"approval_id": hold_id})
                entry.flow.resume()  # type: ignore[no-untyped-call]
                continue
            finish(held, hold_id, "approved", timeout=self.timeout)

    async def _close(self, hold_id: str) -> State:
        """End an undecided hold in the table; a decision that landed first wins."""
        return await asyncio.to_thread(holds.close_undecided, self.store, hold_id, self.clock)
