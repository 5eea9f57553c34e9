"""Approvals over HTTP: list, read, approve, deny; and the issuance side of POST /v1/tokens.

    GET  /v1/approvals                  pending approvals the caller may decide
    GET  /v1/approvals/{id}             state; the requester collects an approved token here
    POST /v1/approvals/{id}/approve     {"reason": "..."}
    POST /v1/approvals/{id}/deny        {"reason": "..."}

The same routes decide issuance approvals (pk="approval") and data-path holds written by the
gateways (pk="hold"). Every change is a conditional write (jitgate.approval_store), so
concurrent approvers cannot race. An approved issuance is minted when the requester collects
it, so the token's TTL starts then; the grant is evaluated again with the requester's fresh
identity, and the collection is marked before signing so a token is handed out once. Each
step is a token event in S3; a new request is published to SNS with a summary and no secret.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any

import boto3
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from aws_lambda_powertools.metrics import MetricUnit
from botocore.config import Config

from broker.deps import Services, issuer_url, services
from broker.observability import logger, metrics
from broker.routes.common import base_event, bearer, json_body, json_response, record_denial
from jitgate.approval_store import ApprovalStore, Conflict
from jitgate.approvals import (
    Approval,
    Verdict,
    close,
    collect_by,
    decide,
    is_approver,
    kind_of,
    may_decide,
    new_id,
    state_at,
    view,
)
from jitgate.errors import ApprovalExpired, BadRequest, JitgateError, NotFound, NotGranted
from jitgate.events import TokenEvent
from jitgate.policy import Decision, Identity, TokenRequest, evaluate_grants, is_admin
from jitgate.token import new_jti

router = APIGatewayHttpRouter()  # type: ignore[no-untyped-call]

_CLIENT_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"})
MAX_LISTED = 200


@dataclass(frozen=True)
class ApprovalServices:
    store: ApprovalStore
    sns: Any
    topic_arn: str | None


_current: tuple[Services, ApprovalServices] | None = None


def approval_services(svc: Services) -> ApprovalServices:
    """The table store and SNS client for the broker's settings, built once per container."""
    global _current
    if _current is None or _current[0] is not svc:
        made = ApprovalServices(
            store=ApprovalStore(boto3.client("dynamodb", config=_CLIENT_CONFIG), svc.settings.table),
            sns=boto3.client("sns", config=_CLIENT_CONFIG),
            topic_arn=svc.settings.topic_arn,
        )
        _current = (svc, made)
    return _current[1]


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


def _publish(asvc: ApprovalServices, svc: Services, approval: Approval) -> None:
    """Tell the approvers: who asks for what, and where to decide. No token, no secret."""
    if not asvc.topic_arn:
        return
    message = {
        "type": "jitgate.approval_requested",
        "id": approval.id,
        "kind": approval.kind,
        "requester": approval.requester,
        "connection": approval.connection,
        "approvers": approval.approvers.model_dump(mode="json"),
        "expires_at": math.ceil(approval.expires_at),
        "summary": dict(approval.summary),
        "decide": f"{issuer_url(svc.settings, router.current_event)}/v1/approvals/{approval.id}",
    }
    try:
        asvc.sns.publish(
            TopicArn=asvc.topic_arn,
            Subject=f"jitgate: approval requested for {approval.connection}"[:100],
            Message=json.dumps(message, separators=(",", ":")),
            MessageAttributes={"kind": {"DataType": "String", "StringValue": approval.kind}},
        )
    except Exception as exc:  # the request stands; approvers can still list it
        logger.error(
            "approval notification not published", extra={"apv": approval.id, "error_type": type(exc).__name__}
        )


# -- issuance (called by POST /v1/tokens) -------------------------------------------------------


def open_issuance(
    svc: Services, identity: Identity, request: TokenRequest, decision: Decision, fields: dict[str, Any], now: float
) -> Response[str]:
    """Answer 202 with an approval id: nothing is minted until approvers agree and the requester collects."""
    asvc = approval_services(svc)
    approval = Approval(
        id=new_id("issuance"),
        kind="issuance",
        requester=identity.subject,
        connection=decision.connection,
        approvers=decision.approval.approvers,
        created_at=now,
        expires_at=now + decision.approval.timeout,
        summary={
            "sub": identity.subject,
            "connection": decision.connection,
            "operations": list(decision.operations),
            "grant": decision.grant,
            "ttl": decision.ttl,
            "job": request.job,
            "purpose": request.purpose,
        },
        request={
            "issuer": identity.issuer,
            "grant": decision.grant,
            "connection": request.connection,
            "operations": list(request.operations) if request.operations is not None else None,
            "ttl": request.ttl,
            "job": request.job,
            "purpose": request.purpose,
        },
    )
    asvc.store.create(approval, now=now)
    svc.events.write(
        TokenEvent(**{**fields, "event_type": "approval_requested", "status": 202, "apv": approval.id})
    )
    _publish(asvc, svc, approval)
    metrics.add_metric(name="ApprovalsRequested", unit=MetricUnit.Count, value=1)
    logger.info("approval requested", extra={"apv": approval.id, "sub": identity.subject, "conn": approval.connection})
    return json_response(
        202,
        {
            "approval_id": approval.id,
            "state": "pending",
            "expires_at": math.ceil(approval.expires_at),
            "required": approval.approvers.count,
        },
    )


# -- routes -------------------------------------------------------------------------------------


def _identity(svc: Services, now: float) -> Identity:
    return svc.verifier.verify(bearer(router.current_event), now=now)


def _load(asvc: ApprovalServices, approval_id: str, now: float) -> tuple[Approval, int]:
    found = asvc.store.get(approval_id, now=now) if kind_of(approval_id) else None
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
    items = [a for a, _ in approval_services(svc).store.scan(now=now) if may_decide(a, who, now)]
    items.sort(key=lambda a: a.created_at)
    return json_response(200, {"approvals": [view(a, now) for a in items[:MAX_LISTED]]})


@router.get("/v1/approvals/<approval_id>")
def get_approval(approval_id: str) -> Response[str]:
    svc = services()
    asvc = approval_services(svc)
    now = svc.clock()
    who = _identity(svc, now)
    approval, version = _load(asvc, approval_id, now)
    if not _may_see(svc, approval, who):
        raise NotFound("no such approval")  # the same answer as for an unknown id
    state = state_at(approval, now)
    if state == "expired" and approval.closed is None:
        approval, version = _record_expiry(svc, asvc, approval, version, now)
    body = view(approval, now)
    if (
        approval.kind == "issuance"
        and state == "approved"
        and who.subject == approval.requester
        and who.issuer == approval.request.get("issuer")
    ):
        if approval.collected_jti is None:
            body.update(_collect(svc, asvc, who, approval, version, now))
        else:
            body.update(collected=True, jti=approval.collected_jti)
    return json_response(200, body)


def _record_expiry(
    svc: Services, asvc: ApprovalServices, approval: Approval, version: int, now: float
) -> tuple[Approval, int]:
    """Write the `expired` step once (the first reader after the window does it)."""
    closed = close(approval, "expired", now=now)
    try:
        new_version = asvc.store.put(closed, version=version, now=now)
    except Conflict:
        return _load(asvc, approval.id, now)
    _event(svc, now, "approval_expired", closed, status=410, code="approval_expired")
    return closed, new_version


def _collect(
    svc: Services, asvc: ApprovalServices, who: Identity, approval: Approval, version: int, now: float
) -> dict[str, Any]:
    """Mint the approved token now (its TTL starts here), exactly once."""
    from broker.routes import tokens  # tokens imports this module for open_issuance

    if now >= collect_by(approval):
        raise ApprovalExpired("the approved token was not collected in time; request a new one")
    stored = approval.request
    ops = stored.get("operations")
    request = TokenRequest(
        connection=str(stored["connection"]),
        operations=tuple(ops) if ops is not None else None,
        ttl=stored.get("ttl"),
        job=stored.get("job"),
        purpose=stored.get("purpose"),
    )
    decision = evaluate_grants(svc.policy, who, request, default_ttl=svc.settings.default_ttl)
    if decision.grant != stored.get("grant"):
        raise NotGranted("the grant this approval was for no longer applies to you")
    jti = new_jti()
    marked = replace(approval, collected_jti=jti)
    try:
        marked_version = asvc.store.put(marked, version=version, now=now)
    except Conflict:
        return {"collected": True}  # someone collected it a moment ago; a token is handed out once
    fields = base_event(router, svc, now, "issued")
    fields.update(oidc_issuer=who.issuer, sub=who.subject, conn=request.connection, job=request.job,
                  purpose=request.purpose, requested_ttl=request.ttl, grant_name=decision.grant,
                  operations=list(decision.operations))
    try:
        issued = tokens.issue(svc, who, request, decision, fields, int(now), jti=jti, apv=approval.id)
    except Exception:
        try:  # give the requester another try; the condition keeps a racing collector safe
            asvc.store.put(replace(marked, collected_jti=None), version=marked_version, now=now)
        except Exception as exc:
            logger.error("collection mark not undone", extra={"apv": approval.id, "error_type": type(exc).__name__})
        raise
    metrics.add_metric(name="ApprovalsCollected", unit=MetricUnit.Count, value=1)
    return {**issued, "collected": True}


def _decide(approval_id: str, verdict: Verdict) -> Response[str]:
    svc = services()
    asvc = approval_services(svc)
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
        _, after = asvc.store.update(
            approval_id, lambda a: decide(a, who, verdict, reason, now=svc.clock()), now=svc.clock
        )
    except JitgateError as exc:  # a refused vote (a malformed body too) is a denial on record
        record_denial(svc, fields, exc)
        raise
    t = svc.clock()
    state = state_at(after, t)
    _event(svc, t, "approval_decided", after, status=200, actor=who.subject,
           code=None if verdict == "approve" else "approval_denied")
    metrics.add_metric(name="ApprovalVotes", unit=MetricUnit.Count, value=1)
    logger.info("approval vote", extra={"apv": approval_id, "by": who.subject, "verdict": verdict, "state": state})
    return json_response(200, view(after, t))


@router.post("/v1/approvals/<approval_id>/approve")
def approve(approval_id: str) -> Response[str]:
    return _decide(approval_id, "approve")


@router.post("/v1/approvals/<approval_id>/deny")
def deny(approval_id: str) -> Response[str]:
    return _decide(approval_id, "deny")
