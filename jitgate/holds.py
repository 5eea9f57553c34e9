"""What the gateway holds for a human, and what ends a hold, whatever protocol carried the request.

The approval rules themselves are `jitgate.approvals` (`risk_reasons`, the state machine, shared
with the broker); this module builds what a gateway decides from: the request's facts
(`request_facts`), the hold item (`new_hold`), the notice approvers get (`hold_notice`), what a
poll of the table means for one hold (`outcome`) and whether an approved request may still go
(`resume_error`), how an undecided hold is closed in the table (`close_undecided`) and what the
held request is answered when its hold ends (`ending`). The HTTP addon (addon/approval_hold.py)
keeps the flows, the poller and the IO.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

from jitgate.approval_store import ApprovalStore
from jitgate.approvals import Approval, RequestFacts, State, close, hold_approvers, hold_summary, new_id, state_at
from jitgate.decoding import DEFAULT_DECODED_LIMIT, decoded_size
from jitgate.errors import (
    ApprovalClosed,
    ApprovalDenied,
    ApprovalTimeout,
    JitgateError,
    RevocationUnavailable,
    TokenExpired,
    TokenRevoked,
)
from jitgate.policy import Connection, Policy
from jitgate.records import Decision, Finding
from jitgate.scope import document_count
from jitgate.token import Claims

logger = logging.getLogger(__name__)

Outcome = Literal["approved", "denied", "close"]


def request_facts(
    raw: bytes,
    encoding: str,
    conn: Connection,
    operation: str | None,
    body: Callable[[], Any],
    findings: Sequence[Finding],
) -> RequestFacts:
    """The facts the approval rules judge; raises ValueError for a body that does not decode.

    `size` is the decoded body (300 kB is no 1 kB request for being sent as gzip), counted without
    holding it decoded: exact up to `bound` (`max_bytes`, at least the default inspection limit),
    past it only "more than `bound`", and such a body is not parsed for its documents either (a
    bomb). `body()` is the parsed JSON body (None when there is none or it is no JSON), asked for
    only when a rule needs the document count.
    """
    bound = max(conn.approval.max_bytes or 0, DEFAULT_DECODED_LIMIT)
    size = decoded_size(raw, encoding, bound) if raw else 0
    documents: int | None = None
    # Count documents only when a rule needs the number: big bodies are not parsed for nothing.
    if operation is not None and conn.approval.max_documents is not None and size <= bound:
        documents = document_count(conn.dialect, operation, body())
    return RequestFacts(
        operation=operation,
        documents=documents,
        size=size,
        findings=tuple(findings),
    )


def new_hold(
    policy: Policy,
    conn: Connection,
    claims: Claims,
    facts: RequestFacts,
    reasons: Sequence[str],
    *,
    method: str,
    host: str,
    path: str,
    now: float,
    timeout: float,
    gateway: str,
    flow_id: str,
    collection: str | None = None,
) -> Approval:
    """The hold item of a risky request: a masked summary, the approvers, the deadline."""
    summary = hold_summary(
        sub=claims.sub,
        jti=claims.jti,
        job=claims.job,
        connection=conn.name,
        facts=facts,
        method=method,
        host=host,
        path=path,
        reasons=reasons,
        collection=collection,
    )
    return Approval(
        id=new_id("hold"),
        kind="hold",
        requester=claims.sub,
        connection=conn.name,
        approvers=hold_approvers(policy, conn),
        created_at=now,
        expires_at=now + timeout,
        summary={**summary, "gateway": gateway, "flow": flow_id},
    )


def hold_notice(approval: Approval) -> tuple[str, str]:
    """(subject, message) of the notice that a request waits: the summary, never a body."""
    message = {
        "type": "jitgate.approval_requested",
        "id": approval.id,
        "kind": "hold",
        "requester": approval.requester,
        "connection": approval.connection,
        "expires_at": math.ceil(approval.expires_at),
        "summary": dict(approval.summary),
    }
    subject = f"jitgate: request held on {approval.connection}"[:100]
    return subject, json.dumps(message, separators=(",", ":"))


def publish_notice(sns: Any, topic: str, approval: Approval) -> None:
    """Tell the approvers' topic that a request waits (blocking; a failure is logged, never raised)."""
    subject, message = hold_notice(approval)
    try:
        sns.publish(TopicArn=topic, Subject=subject, Message=message)
    except Exception as exc:
        logger.warning("jitgate: hold notification not published (%s)", type(exc).__name__)


def outcome(state: State | None, *, past_deadline: bool) -> Outcome | None:
    """What a poll means for one hold: resume it, refuse it, close it undecided, or keep waiting.

    `state` is the hold item's state (None: the item was not read this time)."""
    if state == "approved":
        return "approved"
    if state == "denied":
        return "denied"
    if state == "expired" or past_deadline:
        return "close"
    return None


def resume_error(
    claims: Claims | None, jti: str, revoked: set[str] | None, *, now: float
) -> JitgateError | None:
    """Why an approved request may not go after all: an approval is no pass for a token revoked
    or expired while its request waited. `revoked` None: the revocations could not be read."""
    if revoked is None:
        return RevocationUnavailable("the token's revocation state cannot be checked")
    if jti in revoked:
        return TokenRevoked("token has been revoked")
    if claims is not None and now >= claims.exp:
        return TokenExpired("token expired while its request waited for approval")
    return None


def close_undecided(store: ApprovalStore, hold_id: str, clock: Callable[[], float]) -> State:
    """Close a hold nobody decided in time as expired; its state after. Blocking (table IO).

    A decision that landed first wins (the hold is already closed: its state is read back); a
    table that cannot be read or written still ends the hold, as expired (fail closed)."""
    try:
        _, after = store.update(hold_id, lambda a: close(a, "expired", now=clock()), now=clock)
        return state_at(after, clock())
    except ApprovalClosed:
        try:
            found = store.get(hold_id, now=clock())
        except Exception:
            found = None
        if found is not None:
            return state_at(found[0], clock())
    except Exception as exc:
        logger.warning("jitgate: hold %s not closed in the table (%s)", hold_id, type(exc).__name__)
    return "expired"


def ending(state: State, *, timeout: float) -> tuple[Decision, JitgateError | None]:
    """The decision recorded when a hold ends in `state`, and the refusal the request gets (None: it goes)."""
    if state == "approved":
        return Decision.APPROVED, None
    if state == "denied":
        return Decision.DENIED, ApprovalDenied("an approver denied this request")
    return Decision.DENIED, ApprovalTimeout(f"no approver decided within {timeout:g} s; the request was not forwarded")
