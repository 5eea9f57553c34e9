"""Helpers the routes share: JSON answers, the bearer token, the event skeleton."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from broker.deps import Services, issuer_url
from broker.observability import logger
from jitgate.errors import BadRequest, JitgateError, Unauthenticated
from jitgate.events import TokenEvent, iso_time

MAX_BODY_BYTES = 16 * 1024


def json_response(status: int, body: Any, *, headers: dict[str, str] | None = None) -> Response[str]:
    return Response(
        status_code=status,
        content_type="application/json",
        body=json.dumps(body, separators=(",", ":")),
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def bearer(event: APIGatewayProxyEventV2) -> str:
    """The OIDC token from `Authorization: Bearer ...`; 401 when absent."""
    value = event.headers.get("authorization") or ""  # case-insensitive mapping
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("an OIDC identity token is required: Authorization: Bearer <token>")
    return token.strip()


def json_body(event: APIGatewayProxyEventV2) -> dict[str, Any]:
    """The body as a JSON object; BadRequest for anything else, so the route records the denial."""
    try:
        raw = event.decoded_body or ""
        if len(raw) > MAX_BODY_BYTES:
            raise BadRequest("request body is too large")
        body = json.loads(raw)
    # Bad base64, bad UTF-8 and bad JSON alike; nesting deeper than the parser's recursion limit
    # (3,000 levels fit in 16 kB) raises RecursionError, which is no ValueError.
    except (ValueError, RecursionError):
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def base_event(router: APIGatewayHttpRouter, svc: Services, now: float, event_type: str) -> dict[str, Any]:
    ev = router.current_event
    http = ev.request_context.http
    agent = http.user_agent or None
    return {
        "event_time": iso_time(now),
        "event_type": event_type,
        "broker": issuer_url(svc.settings, ev),
        "route": f"{http.method} {ev.raw_path}"[:256],
        "request_id": ev.request_context.request_id or None,
        "source_ip": http.source_ip or None,
        "user_agent": agent[:256] if agent else None,
    }


def record_denial(svc: Services, fields: dict[str, Any], exc: JitgateError) -> None:
    """Write a denial event; a failure to write it is logged and the denial stands."""
    try:
        svc.events.write(TokenEvent(**{**fields, "event_type": "denied", "status": exc.status, "code": exc.code}))
    except JitgateError:
        logger.error("denial event not written", extra={"code": exc.code})
