"""Issuance approvals, the service side: open one, tell the approvers, mint the approved token once.

POST /v1/tokens opens an issuance approval when the grant needs one (nothing is minted then);
GET /v1/approvals/{id} collects it for the requester once approvers agree (broker/routes/approvals.py).
The approved token is minted at collection, so its TTL starts then: the grant is evaluated again
with the requester's fresh identity, and the approval is marked collected before signing, so a
token is handed out once. Every change is a conditional write (jitgate.approval_store).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from broker.audit import EventSink
from broker.issuance import Issuance
from broker.observability import logger, metrics
from jitgate.approval_store import ApprovalStore, Conflict
from jitgate.approvals import Approval, collect_by, new_id
from jitgate.errors import ApprovalExpired, NotGranted
from jitgate.events import TokenEvent
from jitgate.policy import Decision, Identity, TokenRequest
from jitgate.token import new_jti


@dataclass(frozen=True)
class Approvals:
    """The approval table, the approvers' SNS topic, the audit sink and the issuance service."""

    store: ApprovalStore
    sns: Any
    topic_arn: str | None
    events: EventSink
    issuance: Issuance

    def open_issuance(
        self,
        identity: Identity,
        request: TokenRequest,
        decision: Decision,
        fields: dict[str, Any],
        now: float,
        *,
        broker_url: str,
    ) -> Approval:
        """Store a pending issuance approval, write its event and notify approvers; nothing is minted."""
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
                "ttl": decision.ttl,  # the TTL the collected token gets (decided once, in the grant decision)
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
        self.store.create(approval, now=now)
        self.events.write(
            TokenEvent(**{**fields, "event_type": "approval_requested", "status": 202, "apv": approval.id})
        )
        self.publish(approval, broker_url=broker_url)
        metrics.add_metric(name="ApprovalsRequested", unit=MetricUnit.Count, value=1)
        logger.info(
            "approval requested", extra={"apv": approval.id, "sub": identity.subject, "conn": approval.connection}
        )
        return approval

    def publish(self, approval: Approval, *, broker_url: str) -> None:
        """Tell the approvers: who asks for what, and where to decide. No token, no secret."""
        if not self.topic_arn:
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
            "decide": f"{broker_url}/v1/approvals/{approval.id}",
        }
        try:
            self.sns.publish(
                TopicArn=self.topic_arn,
                Subject=f"jitgate: approval requested for {approval.connection}"[:100],
                Message=json.dumps(message, separators=(",", ":")),
                MessageAttributes={"kind": {"DataType": "String", "StringValue": approval.kind}},
            )
        except Exception as exc:  # the request stands; approvers can still list it
            logger.error(
                "approval notification not published", extra={"apv": approval.id, "error_type": type(exc).__name__}
            )

    def collect(
        self,
        who: Identity,
        approval: Approval,
        version: int,
        now: float,
        *,
        broker_url: str,
        fields: dict[str, Any],
    ) -> dict[str, Any]:
        """Mint the approved token now (its TTL starts here), exactly once. `fields`: the event so far."""
        if now >= collect_by(approval):
            raise ApprovalExpired("the approved token was not collected in time; request a new one")
        request = issuance_request(approval)
        decision = self.issuance.decide(who, request)
        if decision.grant != approval.request.get("grant"):
            raise NotGranted("the grant this approval was for no longer applies to you")
        jti = new_jti()
        marked = replace(approval, collected_jti=jti)
        try:
            marked_version = self.store.put(marked, version=version, now=now)
        except Conflict:
            return {"collected": True}  # someone collected it a moment ago; a token is handed out once
        fields.update(oidc_issuer=who.issuer, sub=who.subject, conn=request.connection, job=request.job,
                      purpose=request.purpose, requested_ttl=request.ttl, grant_name=decision.grant,
                      operations=list(decision.operations))
        try:
            issued = self.issuance.issue(broker_url=broker_url, identity=who, request=request, decision=decision,
                                         fields=fields, now=int(now), jti=jti, apv=approval.id)
        except Exception:
            try:  # give the requester another try; the condition keeps a racing collector safe
                self.store.put(replace(marked, collected_jti=None), version=marked_version, now=now)
            except Exception as exc:
                logger.error("collection mark not undone", extra={"apv": approval.id, "error_type": type(exc).__name__})
            raise
        metrics.add_metric(name="ApprovalsCollected", unit=MetricUnit.Count, value=1)
        return {**issued, "collected": True}


def issuance_request(approval: Approval) -> TokenRequest:
    """The token request an issuance approval was opened for, as stored with it."""
    stored = approval.request
    ops = stored.get("operations")
    return TokenRequest(
        connection=str(stored["connection"]),
        operations=tuple(ops) if ops is not None else None,
        ttl=stored.get("ttl"),
        job=stored.get("job"),
        purpose=stored.get("purpose"),
    )
