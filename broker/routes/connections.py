"""GET /v1/connections: the connections and operations the caller's own identity may get.

The answer comes from the same grant matching as a mint (`jitgate.policy.grantable`), for the
verified OIDC identity only: a connection no grant of this identity names is not listed, so the
route tells nobody what others may reach. `jitgate connections` prints it; `jitgate run`
suggests close names from it when a connection name is unknown (issue 25, item 4).
"""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from broker.deps import services
from broker.observability import logger
from broker.routes.common import bearer, json_response
from jitgate.policy import grantable

router = APIGatewayHttpRouter()  # type: ignore[no-untyped-call]


@router.get("/v1/connections")
def connections() -> Response[str]:
    svc = services()
    identity = svc.verifier.verify(bearer(router.current_event), now=svc.clock())
    listed = grantable(svc.policy, identity)
    logger.info("connections listed", extra={"sub": identity.subject, "count": len(listed)})
    return json_response(200, {"connections": [g.to_json() for g in listed]})
