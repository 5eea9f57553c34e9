"""Held statements on the Postgres path: a risky statement waits for a human before it reaches the server.

Which statements (`hold_reasons`): an UPDATE or DELETE without a WHERE clause, always (it touches
every row; `no_where:<op>`) and any statement performing an operation the connection's
`approval` names (`operation:<op>`, data-modifying CTEs included). The HTTP rules on a body's
documents and bytes have no statement counterpart and do not apply here. Only statements the
token's scope allows are held: a refusal is answered at once.

The hold goes through the same machinery as a held HTTP request (jitgate.holds,
jitgate.approvals, the shared table): a hold item whose summary shows the statement with its
literals removed, its tables, the requester (the token's `sub`), the database user and why;
`jitgate approvals list` shows it to the connection's approvers (else the policy's admins), never
to the requester as a decider. `StatementHolds.hold` then waits, polling the item, while the
client waits on its statement:

- approved: the token is checked once more (expiry, the revocation list, and the revocation
  items read afresh: an approval is no pass for a token revoked while it waited) and the
  statement goes;
- denied: `approval_denied`; no decision within the approval timeout: the hold is closed in the
  table (a conditional write: a late approval cannot land after it) and `approval_timeout`;
- the token expiring or being revoked while it waits ends the hold at once (closed in the
  table, the connection closes as it would on its next statement); the client going away ends
  it too, and nothing is run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from jitgate import holds
from jitgate.approval_store import ApprovalStore
from jitgate.approvals import Approval, RequestFacts, state_at
from jitgate.errors import ApprovalUnavailable, JitgateError, TokenExpired, TokenRevoked
from jitgate.pgsql import Statement
from jitgate.policy import ApprovalRules, Connection, Policy
from jitgate.records import Decision
from jitgate.state import revoked_among
from jitgate.token import Claims

logger = logging.getLogger(__name__)

# The session's token and audit check: (error, whether the connection must close).
Gate = Callable[[], Awaitable[tuple[JitgateError | None, bool]]]


def hold_reasons(rules: ApprovalRules, stmts: Sequence[Statement]) -> tuple[str, ...]:
    """Why these statements (one Query message or one Execute) need a human; empty: they do not."""
    reasons: list[str] = []
    for stmt in stmts:
        reasons += [f"no_where:{op}" for op in stmt.unfiltered]
        reasons += [f"operation:{op}" for op in sorted(stmt.operations) if op in rules.operations]
    return tuple(dict.fromkeys(reasons))


def statement_hold(
    policy: Policy,
    conn: Connection,
    claims: Claims,
    stmts: Sequence[Statement],
    reasons: Sequence[str],
    *,
    user: str,
    now: float,
    timeout: float,
    gateway: str,
    flow_id: str,
) -> Approval:
    """The hold item: the HTTP hold's summary plus the statements (literals removed) and their tables."""
    kinds = [s.kind for s in stmts]
    tables = sorted({t for s in stmts for t in s.tables})
    size = sum(len(s.normalized.encode()) for s in stmts)  # the literal-free text the approver reads
    facts = RequestFacts(operation=kinds[0] if len(kinds) == 1 else ",".join(kinds), documents=None, size=size)
    approval = holds.new_hold(
        policy, conn, claims, facts, reasons, method="SQL", host=conn.upstream_host, path=f"/{conn.database}",
        now=now, timeout=timeout, gateway=gateway, flow_id=flow_id, collection=tables[0] if tables else None,
    )
    extra = {
        "statement": "; ".join(s.normalized for s in stmts),
        "statement_fingerprints": [s.fingerprint for s in stmts],
        "tables": tables,
        "db_user": user,
    }
    return replace(approval, summary={**approval.summary, **extra})


@dataclass(frozen=True)
class HoldEnd:
    """How a hold ended: what the record says and what the client gets (error None: the statement goes)."""

    approval_id: str | None
    decision: Decision  # APPROVED or DENIED
    error: JitgateError | None
    close: bool = False  # the error is the token's: the connection closes, as on its next statement


class StatementHolds:
    """The holds of one gateway's Postgres listener. Table and topic IO runs in threads."""

    def __init__(
        self,
        *,
        dynamodb: Any,
        table: str,
        timeout: float,
        poll: float,
        max_held: int,
        gateway: str,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        sns: Any = None,
        topic: str = "",
    ) -> None:
        self.store = ApprovalStore(dynamodb, table)
        self._dynamodb, self._table = dynamodb, table
        self.timeout, self.poll, self.max_held = timeout, poll, max_held
        self.gateway = gateway
        self._clock, self._monotonic = clock, monotonic
        self._sns, self._topic = sns, topic
        self.waiting = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def hold(
        self,
        approval: Approval,
        *,
        gate: Gate,
        gone: Callable[[], bool],
    ) -> HoldEnd:
        """Record `approval` and wait for its end. `gate` is the session's per-statement token check,
        `gone` whether the client has gone away."""
        if self.waiting >= self.max_held:
            refused = ApprovalUnavailable("too many statements are waiting for approval; try again later")
            return HoldEnd(None, Decision.DENIED, refused)
        try:
            await asyncio.to_thread(self.store.create, approval, now=self._clock())
        except Exception:
            refused = ApprovalUnavailable("this statement needs an approval, and the hold cannot be recorded")
            return HoldEnd(None, Decision.DENIED, refused)
        logger.info("jitgate: held a statement on %s (%s) as %s", approval.connection,
                    ",".join(approval.summary.get("reasons") or ()), approval.id)
        if self._topic and self._sns is not None:
            notice = asyncio.to_thread(holds.publish_notice, self._sns, self._topic, approval)
            task = asyncio.get_running_loop().create_task(notice)
            self._tasks.add(task)  # a reference until it finishes
            task.add_done_callback(self._tasks.discard)
        self.waiting += 1
        try:
            end = await self._wait(approval, gate, gone)
        finally:
            self.waiting -= 1
        logger.info("jitgate: hold %s ended: %s", approval.id, end.error.code if end.error else "approved")
        return end

    async def _wait(self, approval: Approval, gate: Gate, gone: Callable[[], bool]) -> HoldEnd:
        deadline = self._monotonic() + self.timeout
        while True:
            await asyncio.sleep(max(0.0, min(self.poll, deadline - self._monotonic())))
            problem, close = await gate()
            if problem is not None or gone():
                await asyncio.to_thread(holds.close_undecided, self.store, approval.id, self._clock)
                if problem is None:
                    problem = ApprovalUnavailable("the client went away while its statement was held")
                return HoldEnd(approval.id, Decision.DENIED, problem, close)
            try:
                found = await asyncio.to_thread(self.store.get, approval.id, now=self._clock())
            except Exception as exc:  # keep waiting; the deadline still ends the hold
                logger.warning("jitgate: hold poll failed (%s)", type(exc).__name__)
                found = None
            past = self._monotonic() >= deadline
            result = holds.outcome(state_at(found[0], self._clock()) if found is not None else None,
                                   past_deadline=past)
            if result == "approved":
                return await self._resume(approval)
            if result is None:
                continue
            state = "denied" if result == "denied" else await asyncio.to_thread(
                holds.close_undecided, self.store, approval.id, self._clock
            )
            if state == "approved":  # an approval that landed before the close
                return await self._resume(approval)
            decision, error = holds.ending(state, timeout=self.timeout)
            return HoldEnd(approval.id, decision, error)

    async def _resume(self, approval: Approval) -> HoldEnd:
        """Approved: still refused if the token was revoked or expired meanwhile (revocations read afresh)."""
        jti = str(approval.summary.get("jti"))
        revoked: set[str] | None
        try:
            revoked = await asyncio.to_thread(revoked_among, self._dynamodb, self._table, {jti}, now=self._clock())
        except Exception as exc:
            logger.warning("jitgate: revocation check before resuming failed (%s)", type(exc).__name__)
            revoked = None
        error = holds.resume_error(None, jti, revoked, now=self._clock())
        if error is not None:
            return HoldEnd(approval.id, Decision.DENIED, error, isinstance(error, TokenRevoked | TokenExpired))
        return HoldEnd(approval.id, Decision.APPROVED, None)
