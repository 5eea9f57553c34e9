"""POST /v1/tokens (mint) and DELETE /v1/tokens/{jti} (revoke).

Mint: verify the caller's OIDC token, let the issuance service (broker/issuance.py) decide the
grant and mint, or open an issuance approval (broker/approvals.py) when the grant needs one. A
longer TTL than the grant allows is clamped, and the answer says the real expiry. Any failure after the identity check
is written as a denial event; an issuance whose event cannot be written is refused.
"""

from __future__ import annotations

import math
import re
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from broker.deps import issuer_url, services
from broker.observability import logger, metrics
from broker.routes.common import base_event, bearer, json_body, json_response, record_denial
from jitgate.durations import parse_duration
from jitgate.errors import BadRequest, JitgateError
from jitgate.events import TokenEvent
from jitgate.policy import TokenRequest, is_admin

router = APIGatewayHttpRouter()  # type: ignore[no-untyped-call]

_JTI = re.compile(r"^[A-Za-z0-9_-]{8,128}$")


class MintRequest(BaseModel):
    """The body of POST /v1/tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    connection: str = Field(min_length=1, max_length=128)
    operations: tuple[str, ...] | None = Field(default=None, max_length=64)
    # Strict: JSON true would otherwise be read as 1 second. Booleans are not durations.
    ttl: StrictInt | StrictStr | None = None
    job: str | None = Field(default=None, min_length=1, max_length=128)
    purpose: str | None = Field(default=None, min_length=1, max_length=512)


def _parse(body: dict[str, Any]) -> TokenRequest:
    try:
        req = MintRequest.model_validate(body)
    except ValidationError as exc:
        # Name the fields, never echo their values.
        fields = sorted({".".join(str(p) for p in e["loc"][:1]) or "body" for e in exc.errors()})
        raise BadRequest(f"invalid fields: {', '.join(fields)}") from None
    try:
        ttl = None if req.ttl is None else parse_duration(req.ttl)
    except ValueError:
        raise BadRequest("ttl must be a positive number of seconds or a duration like '15m'") from None
    return TokenRequest(req.connection, req.operations, ttl, req.job, req.purpose)


@router.post("/v1/tokens")
def mint() -> Response[str]:
    svc = services()
    now = svc.clock()
    fields = base_event(router, svc, now, "issued")
    try:
        identity = svc.verifier.verify(bearer(router.current_event), now=now)
        fields.update(oidc_issuer=identity.issuer, sub=identity.subject)
        request = _parse(json_body(router.current_event))
        fields.update(conn=request.connection, job=request.job, purpose=request.purpose, requested_ttl=request.ttl)
        decision = svc.issuance.decide(identity, request)
        fields.update(grant_name=decision.grant, operations=list(decision.operations))
        broker_url = issuer_url(svc.settings, router.current_event)
        if decision.approval.required:
            approval = svc.approvals.open_issuance(identity, request, decision, fields, now, broker_url=broker_url)
            return json_response(
                202,
                {
                    "approval_id": approval.id,
                    "state": "pending",
                    "expires_at": math.ceil(approval.expires_at),
                    "required": approval.approvers.count,
                },
            )
        issued = svc.issuance.issue(
            broker_url=broker_url, identity=identity, request=request, decision=decision, fields=fields, now=int(now)
        )
        return json_response(201, issued)
    except JitgateError as exc:
        record_denial(svc, fields, exc)
        metrics.add_metric(name="TokensDenied", unit=MetricUnit.Count, value=1)
        logger.info("token denied", extra={"code": exc.code, "sub": fields.get("sub"), "conn": fields.get("conn")})
        raise


@router.delete("/v1/tokens/<jti>")
def revoke(jti: str) -> Response[str]:
    svc = services()
    now = svc.clock()
    fields = base_event(router, svc, now, "revoked")
    try:
        identity = svc.verifier.verify(bearer(router.current_event), now=now)
        fields.update(oidc_issuer=identity.issuer, actor=identity.subject)
        if not _JTI.fullmatch(jti):
            raise BadRequest("that is not a token id")
        fields.update(jti=jti)
        result = svc.tokens.revoke(jti, identity, admin=is_admin(svc.policy, identity), now=int(now))
        fields.update(sub=result.sub, expires_at=result.expires_at)
        svc.events.write(TokenEvent(**fields, status=200))
    except JitgateError as exc:
        record_denial(svc, fields, exc)
        raise
    metrics.add_metric(name="TokensRevoked", unit=MetricUnit.Count, value=1)
    logger.info("token revoked", extra={"jti": jti, "by": identity.subject, "already": result.already})
    return json_response(
        200,
        {
            "jti": jti,
            "revoked": True,
            "already_revoked": result.already,
            "revoked_at": result.revoked_at,
            "expires_at": result.expires_at,
        },
    )
