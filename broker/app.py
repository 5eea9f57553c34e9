"""The broker Lambda: an HTTP API v2 resolver with its routes, error mapping and a thin handler."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from broker.observability import logger, metrics
from broker.routes import approvals, connections, jwks, tokens
from broker.routes.common import json_response
from jitgate.errors import JitgateError, NotFound

app = APIGatewayHttpResolver()
app.include_router(tokens.router)
app.include_router(jwks.router)
app.include_router(approvals.router)
app.include_router(connections.router)


@app.exception_handler(JitgateError)  # type: ignore[untyped-decorator]
def _jitgate_error(exc: JitgateError) -> Response[str]:
    headers = {"WWW-Authenticate": 'Bearer realm="jitgate"'} if exc.status == 401 else None
    return json_response(exc.status, exc.to_dict(), headers=headers)


@app.exception_handler(Exception)  # type: ignore[untyped-decorator]
def _unexpected(exc: Exception) -> Response[str]:
    # The type only: an exception's text may quote input, and input may hold a token.
    logger.error("unexpected error", extra={"error_type": type(exc).__name__})
    return json_response(500, JitgateError("the broker failed; nothing was issued").to_dict())


@app.not_found
def _not_found(_exc: Exception) -> Response[str]:
    return json_response(404, NotFound("no such route").to_dict())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
