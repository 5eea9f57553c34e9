"""GET /.well-known/jwks.json: the public halves of the broker's KMS signing keys."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from broker.deps import services
from broker.routes.common import json_response

router = APIGatewayHttpRouter()  # type: ignore[no-untyped-call]
MAX_AGE = 300


@router.get("/.well-known/jwks.json")
def jwks() -> Response[str]:
    return json_response(200, services().jwks.jwks(), headers={"Cache-Control": f"public, max-age={MAX_AGE}"})
