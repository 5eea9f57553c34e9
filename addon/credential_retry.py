"""credential_inject's resend after a 401 (not an addon of the chain: `CredentialRetry` in
addon/credential_inject.py calls it before the response checks).

When the upstream answers 401 to the injected secret, the secret is fetched afresh (rotation) and
the request is sent once more with it, and only when the secret changed.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
from mitmproxy import http

from addon import meta
from addon.upstream_client import UpstreamClient, apply_credential
from jitgate import credentials
from jitgate.policy import Policy

logger = logging.getLogger(__name__)


async def retry_on_401(
    flow: http.HTTPFlow, policy: Policy | None, secrets: credentials.SecretSource, client: UpstreamClient
) -> None:
    """Send the request once more with a fresh secret when the upstream answered 401 to the injected one."""
    state = meta.state_of(flow)
    status = flow.response.status_code if flow.response is not None else None
    if not credentials.retry_after_401(status, injected=state.injected, retried=state.credential_retried):
        return
    state.credential_retried = True
    conn = state.connection_in(policy)
    if conn is None:
        return
    old = flow.request.headers.get(conn.credential.header)
    fresh = await asyncio.to_thread(secrets.rotate, conn)
    if fresh is None:
        return
    apply_credential(flow.request, conn, fresh)
    state.injected_secret = fresh
    if flow.request.headers.get(conn.credential.header) == old:
        return  # same credential: another try would get the same 401
    try:
        flow.response = await client.resend(flow.request)
    except httpx.HTTPError as exc:
        logger.warning("jitgate: retry after 401 on %s failed (%s)", conn.name, type(exc).__name__)
