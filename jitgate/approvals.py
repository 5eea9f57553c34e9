"""Approvals: the state machine every approval follows, and the data path's risk rules.

Two kinds share one model. An *issuance* approval holds a token the broker would mint for a
grant with `approval.required`; a *hold* is a risky request a gateway keeps intercepted. The
state is never stored as the truth: it is computed from the votes and `now`, so an approval
whose time ran out is `expired` the moment it does, whoever looks. One denial denies; N of M
counts distinct approvers; the requester never decides.

DynamoDB items use the low-level attribute format (`{"S": ...}`), so this module stays free of
boto3; `version` makes every write conditional on the item not having changed since it was read.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from jitgate.errors import AlreadyVoted, ApprovalClosed, ApprovalExpired, BadRequest, NotAnApprover, SelfApproval
from jitgate.policy import ApprovalRules, Approvers, Connection, Identity, Policy
from jitgate.records import Finding
from jitgate.state import APPROVAL_PK, HOLD_PK

State = Literal["pending", "approved", "denied", "expired"]
Kind = Literal["issuance", "hold"]
Verdict = Literal["approve", "deny"]

DEFAULT_ISSUANCE_TIMEOUT = 3600
DEFAULT_HOLD_TIMEOUT = 120
MAX_REASON = 500
# Items stay readable this long after their window (the requester collects, the gateway resumes).
RETAIN = 24 * 3600
_ID_PREFIX: dict[Kind, str] = {"issuance": "apv-", "hold": "hold-"}


@dataclass(frozen=True)
class Vote:
    approver: str
    verdict: Verdict
    reason: str
    at: float


@dataclass(frozen=True)
class Approval:
    """One approval request; `summary` is what approvers see and never carries a secret."""

    id: str
    kind: Kind
    requester: str
    connection: str
    approvers: Approvers
    created_at: float
    expires_at: float
    votes: tuple[Vote, ...] = ()
    summary: Mapping[str, Any] = field(default_factory=dict)
    # Issuance only: what the broker mints on collection (grant decision, job); no secret.
    request: Mapping[str, Any] = field(default_factory=dict)
    # Set when a terminal state was written by a closer rather than votes (a gateway's timeout).
    closed: State | None = None
    collected_jti: str | None = None

    def state(self, now: float) -> State:
        return state_at(self, now)

    @property
    def pk(self) -> str:
        return pk_for(self.id)


def new_id(kind: Kind) -> str:
    return _ID_PREFIX[kind] + uuid.uuid4().hex


def kind_of(approval_id: str) -> Kind | None:
    """The kind an id names, or None for anything that is no approval id."""
    for kind, prefix in _ID_PREFIX.items():
        rest = approval_id.removeprefix(prefix)
        if rest != approval_id and len(rest) == 32 and all(c in "0123456789abcdef" for c in rest):
            return kind
    return None


def pk_for(approval_id: str) -> str:
    return HOLD_PK if kind_of(approval_id) == "hold" else APPROVAL_PK


def approvers_of(approval: Approval) -> frozenset[str]:
    return frozenset(v.approver for v in approval.votes if v.verdict == "approve")


def state_at(approval: Approval, now: float) -> State:
    """pending / approved / denied / expired from the votes and `now`."""
    if any(v.verdict == "deny" for v in approval.votes):
        return "denied"
    if len(approvers_of(approval)) >= approval.approvers.count:
        return "approved"
    if approval.closed is not None:
        return approval.closed
    if now >= approval.expires_at:
        return "expired"
    return "pending"


def collect_by(approval: Approval) -> float:
    """Until when an approved issuance can be collected: one request window after the last approval."""
    approved_at = max((v.at for v in approval.votes if v.verdict == "approve"), default=approval.created_at)
    return approved_at + (approval.expires_at - approval.created_at)


def is_approver(approval: Approval, who: Identity) -> bool:
    """Named by the policy for this approval, and not the requester."""
    if who.subject == approval.requester:
        return False
    return who.is_among(approval.approvers.members)


def may_decide(approval: Approval, who: Identity, now: float) -> bool:
    """Whether `who` could vote on `approval` right now (what `GET /v1/approvals` lists)."""
    return (
        state_at(approval, now) == "pending"
        and is_approver(approval, who)
        and all(v.approver != who.subject for v in approval.votes)
    )


def decide(approval: Approval, who: Identity, verdict: Verdict, reason: str, *, now: float) -> Approval:
    """`approval` with `who`'s vote added; raises when the vote is not allowed."""
    reason = reason.strip() if isinstance(reason, str) else ""
    if not reason:
        raise BadRequest("a decision needs a reason")
    if len(reason) > MAX_REASON:
        raise BadRequest(f"the reason is longer than {MAX_REASON} characters")
    state = state_at(approval, now)
    if state == "expired":
        raise ApprovalExpired("the approval request has expired")
    if state != "pending":
        raise ApprovalClosed(f"the approval is already {state}")
    if who.subject == approval.requester:
        raise SelfApproval("the requester cannot decide their own request")
    if not who.is_among(approval.approvers.members):
        raise NotAnApprover("the policy does not name you as an approver of this request")
    if any(v.approver == who.subject for v in approval.votes):
        raise AlreadyVoted("you already voted on this approval")
    return replace(approval, votes=(*approval.votes, Vote(who.subject, verdict, reason, now)))


def close(approval: Approval, state: State, *, now: float) -> Approval:
    """Record that an undecided approval ended without votes: a gateway's hold timed out, or the
    broker noticed the request window passed (so the `expired` step is written once)."""
    current = state_at(approval, now)
    if approval.closed is not None or current not in ("pending", "expired"):
        raise ApprovalClosed(f"the approval is already {current}")
    return replace(approval, closed=state)


def view(approval: Approval, now: float) -> dict[str, Any]:
    """The JSON an approver or the requester sees: state, counts, votes, summary; no secret."""
    return {
        "id": approval.id,
        "kind": approval.kind,
        "state": state_at(approval, now),
        "requester": approval.requester,
        "connection": approval.connection,
        "created_at": int(approval.created_at),
        "expires_at": math.ceil(approval.expires_at),
        "approvals": len(approvers_of(approval)),
        "required": approval.approvers.count,
        "votes": [{"approver": v.approver, "verdict": v.verdict, "reason": v.reason, "at": int(v.at)}
                  for v in approval.votes],
        "summary": dict(approval.summary),
    }


# -- DynamoDB item codec ------------------------------------------------------------------------


def _doc(approval: Approval) -> dict[str, Any]:
    return {
        "id": approval.id,
        "kind": approval.kind,
        "requester": approval.requester,
        "connection": approval.connection,
        "approvers": approval.approvers.model_dump(mode="json"),
        "created_at": approval.created_at,
        "expires_at": approval.expires_at,
        "votes": [{"approver": v.approver, "verdict": v.verdict, "reason": v.reason, "at": v.at}
                  for v in approval.votes],
        "summary": dict(approval.summary),
        "request": dict(approval.request),
        "closed": approval.closed,
        "collected_jti": approval.collected_jti,
    }


def to_item(approval: Approval, *, version: int, now: float) -> dict[str, dict[str, str]]:
    """The table item: the approval as one JSON document plus the attributes conditions use."""
    state = state_at(approval, now)
    # Readers filter on expires_at (DynamoDB TTL deletes late). An item outlives its request
    # window so that `expired`, `denied` and `approved` stay readable states, not a 404.
    keep_until = max(approval.expires_at, now) + RETAIN
    return {
        "pk": {"S": approval.pk},
        "sk": {"S": approval.id},
        "state": {"S": state},
        "version": {"N": str(version)},
        "expires_at": {"N": str(math.ceil(keep_until))},
        "doc": {"S": json.dumps(_doc(approval), separators=(",", ":"), sort_keys=True)},
    }


def from_item(item: Mapping[str, Mapping[str, str]]) -> tuple[Approval, int]:
    """The approval and the item version it was read at."""
    try:
        doc = json.loads(item["doc"]["S"])
        version = int(item["version"]["N"])
        approval = Approval(
            id=str(doc["id"]),
            kind=doc["kind"],
            requester=str(doc["requester"]),
            connection=str(doc["connection"]),
            approvers=Approvers.model_validate(doc["approvers"]),
            created_at=float(doc["created_at"]),
            expires_at=float(doc["expires_at"]),
            votes=tuple(Vote(str(v["approver"]), v["verdict"], str(v["reason"]), float(v["at"]))
                        for v in doc["votes"]),
            summary=doc.get("summary") or {},
            request=doc.get("request") or {},
            closed=doc.get("closed"),
            collected_jti=doc.get("collected_jti"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError("approval item is malformed") from exc
    if approval.kind not in _ID_PREFIX or any(v.verdict not in ("approve", "deny") for v in approval.votes):
        raise ValueError("approval item is malformed")
    return approval, version


def item_expired(item: Mapping[str, Mapping[str, str]], now: float) -> bool:
    """True for an item DynamoDB's TTL should already have deleted."""
    try:
        return float(item["expires_at"]["N"]) <= now
    except (KeyError, ValueError):
        return True


# -- data-path risk rules ----------------------------------------------------------------------


@dataclass(frozen=True)
class RequestFacts:
    """What the gateway knows about one request when it decides whether to hold it."""

    operation: str | None
    documents: int | None
    size: int  # body bytes once decoded (Content-Encoding), as the upstream will read them
    findings: Sequence[Finding] = ()


def risk_reasons(rules: ApprovalRules, facts: RequestFacts) -> tuple[str, ...]:
    """Why a request needs a human before it is forwarded; empty when it does not."""
    reasons: list[str] = []
    if facts.operation is not None and facts.operation in rules.operations:
        reasons.append(f"operation:{facts.operation}")
    if rules.max_documents is not None and facts.documents is not None and facts.documents > rules.max_documents:
        reasons.append(f"documents:{facts.documents}>{rules.max_documents}")
    if rules.max_bytes is not None and facts.size > rules.max_bytes:
        reasons.append(f"bytes:{facts.size}>{rules.max_bytes}")
    review = sorted({f.type for f in facts.findings if f.action == "review"})
    reasons.extend(f"finding:{t}" for t in review)
    return tuple(reasons)


def hold_summary(
    *,
    sub: str,
    jti: str,
    job: str | None,
    connection: str,
    facts: RequestFacts,
    method: str,
    host: str,
    path: str,
    reasons: Sequence[str],
    collection: str | None = None,
) -> dict[str, Any]:
    """The masked summary an approver sees: who, which token (by jti), what, where, how big, why.

    A store call names its collection (the name, where the path holds only its id).

    The query string is dropped (it can carry keys), findings keep only type, place and action,
    and no body text is included.
    """
    return {
        "sub": sub,
        "jti": jti,
        "job": job,
        "connection": connection,
        "operation": facts.operation,
        "collection": collection,
        "method": method,
        "host": host,
        "path": path.split("?", 1)[0],
        "bytes": facts.size,
        "documents": facts.documents,
        "findings": [
            {"type": f.type, "where": f.location, "action": f.action}
            for f in facts.findings
        ],
        "reasons": list(reasons),
    }


def hold_approvers(policy: Policy, connection: Connection) -> Approvers:
    """Who decides a data-path hold: the connection's approvers, else the policy's admins (one of them)."""
    own = connection.approval.approvers
    if own is not None and own.members:
        return own
    return Approvers(members=policy.admins, count=1)
