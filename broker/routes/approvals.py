"""Approvals over HTTP: list, read, approve, deny (the service side is broker/approvals.py).

    GET  /v1/approvals                  pending approvals the caller may decide
    GET  /v1/approvals/{id}             state; the requester collects an approved token here
    POST /v1/approvals/{id}/approve     {"reason": "..."}
    POST /v1/approvals/{id}/deny        {"reason": "..."}

The same routes decide issuance approvals (pk="approval") and data-path holds written by the
gateways (pk="hold"). Every change is a conditional write (jitgate.approval_store), so
concurrent approvers cannot race. Each step is a token event in S3.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from aws_lambda_powertools.metrics import MetricUnit

from broker.deps import Services, issuer_url, services
from broker.observability import logger, metrics
from broker.routes.common import base_event, bearer, json_body, json_response, record_denial
from jitgate.approval_store import Conflict
from jitgate.approvals import Approval, Verdict, close, decide, is_approver, kind_of, may_decide, state_at, view
from jitgate.errors import ApprovalDenied, ApprovalExpired, BadRequest, JitgateError, NotFound
from jitgate.events import TokenEvent
from jitgate.policy import Identity, is_admin

router = APIGatewayHttpRouter()  # type: ignore[no-untyped-call]

MAX_LISTED = 200


def _event(svc: Services, now: float, event_type: str, approval: Approval, **extra: Any) -> None:
    """Write one token event for an approval step; a failed write is logged, the step stands."""
    fields = base_event(router, svc, now, event_type)
    held_op = approval.summary.get("operation") if approval.kind == "hold" else None
    fields.update(
        sub=approval.requester,
        conn=approval.connection,
        apv=approval.id,
        operations=list(approval.request.get("operations") or ([held_op] if held_op else [])),
        grant_name=approval.request.get("grant"),
        job=approval.summary.get("job"),
        # A hold belongs to the token whose request waits: its events join that token's history.
        jti=approval.summary.get("jti") if approval.kind == "hold" else None,
    )
    fields.update(extra)
    try:
        svc.events.write(TokenEvent(**fields))
    except JitgateError:
        logger.error("approval event not written", extra={"apv": approval.id, "event_type": event_type})


# -- routes -------------------------------------------------------------------------------------


def _identity(svc: Services, now: float) -> Identity:
    return svc.verifier.verify(bearer(router.current_event), now=now)


def _load(svc: Services, approval_id: str, now: float) -> tuple[Approval, int]:
    found = svc.approvals.store.get(approval_id, now=now) if kind_of(approval_id) else None
    if found is None:
        raise NotFound("no such approval")
    return found


def _may_see(svc: Services, approval: Approval, who: Identity) -> bool:
    return (
        who.subject == approval.requester
        or is_approver(approval, who)
        or any(v.approver == who.subject for v in approval.votes)
        or is_admin(svc.policy, who)
    )


@router.get("/v1/approvals")
def list_approvals() -> Response[str]:
    svc = services()
    now = svc.clock()
    who = _identity(svc, now)
    items = [a for a, _ in svc.approvals.store.scan(now=now) if may_decide(a, who, now)]
    items.sort(key=lambda a: a.created_at)
    return json_response(200, {"approvals": [view(a, now) for a in items[:MAX_LISTED]]})


@router.get("/v1/approvals/<approval_id>")
def get_approval(approval_id: str) -> Response[str]:
    svc = services()
    now = svc.clock()
    who = _identity(svc, now)
    approval, version = _load(svc, approval_id, now)
    if not _may_see(svc, approval, who):
        raise NotFound("no such approval")  # the same answer as for an unknown id
    state = state_at(approval, now)
    if state == "expired" and approval.closed is None:
        approval, version = _record_expiry(svc, approval, version, now)
    body = view(approval, now)
    if (
        approval.kind == "issuance"
        and state == "approved"
        and who.subject == approval.requester
        and who.issuer == approval.request.get("issuer")
    ):
        if approval.collected_jti is None:
            fields = base_event(router, svc, now, "issued")
            broker_url = issuer_url(svc.settings, router.current_event)
            body.update(svc.approvals.collect(who, approval, version, now, broker_url=broker_url, fields=fields))
        else:
            body.update(collected=True, jti=approval.collected_jti)
    return json_response(200, body)


def _record_expiry(svc: Services, approval: Approval, version: int, now: float) -> tuple[Approval, int]:
    """Write the `expired` step once (the first reader after the window does it)."""
    closed = close(approval, "expired", now=now)
    try:
        new_version = svc.approvals.store.put(closed, version=version, now=now)
    except Conflict:
        return _load(svc, approval.id, now)
    _event(svc, now, "approval_expired", closed, status=410, code=ApprovalExpired.code)
    return closed, new_version


def _decide(approval_id: str, verdict: Verdict) -> Response[str]:
    svc = services()
    now = svc.clock()
    fields = base_event(router, svc, now, "approval_decided")
    try:
        who = _identity(svc, now)
        fields.update(oidc_issuer=who.issuer, actor=who.subject)
        if kind_of(approval_id) is None:
            raise NotFound("no such approval")
        fields.update(apv=approval_id)
        reason = json_body(router.current_event).get("reason")
        if not isinstance(reason, str):
            raise BadRequest("a decision needs a reason: {\"reason\": \"...\"}")
        _, after = svc.approvals.store.update(
            approval_id, lambda a: decide(a, who, verdict, reason, now=svc.clock()), now=svc.clock
        )
    except JitgateError as exc:  # a refused vote (a malformed body too) is a denial on record
        record_denial(svc, fields, exc)
        raise
    t = svc.clock()
    state = state_at(after, t)
    _event(svc, t, "approval_decided", after, status=200, actor=who.subject,
           code=None if verdict == "approve" else ApprovalDenied.code)
    metrics.add_metric(name="ApprovalVotes", unit=MetricUnit.Count, value=1)
    logger.info("approval vote", extra={"apv": approval_id, "by": who.subject, "verdict": verdict, "state": state})
    return json_response(200, view(after, t))


@router.post("/v1/approvals/<approval_id>/approve")
def approve(approval_id: str) -> Response[str]:
    return _decide(approval_id, "approve")


@router.post("/v1/approvals/<approval_id>/deny")
def deny(approval_id: str) -> Response[str]:
    return _decide(approval_id, "deny")
