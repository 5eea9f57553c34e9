"""Stop on SIGTERM without losing a flow or a record: stop accepting, let flows in flight finish.

mitmdump answers SIGTERM by running every addon's `done` in chain order and then exiting, which
cuts whatever is still in flight. This addon sits just before the session recorder. Its `done`
closes the listening sockets (on ECS the NLB has stopped sending new connections by then: SIGTERM
follows its deregistration delay), answers a new request on a connection already open with 503
`gateway_stopping` and `Connection: close` (the client retries on another task), and waits up to
`jitgate_drain_timeout` until every flow it saw has been answered: each one's record is then in
the spool. The recorder's `done`, next, closes the open segment and ships the spool.

A flow counts as finished when mitmproxy marks it no longer live: after its last hook ran and the
answer went out (or the flow failed). Holds are ended before (approval_hold's `done` comes first)
and finish like any other flow.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader

from addon import meta, mitmproxy_compat, settings
from addon.respond import refuse
from jitgate.errors import GatewayStopping

logger = logging.getLogger(__name__)

_POLL = 0.05  # seconds between looks at the flows in flight while draining


class GracefulStop:
    def __init__(self) -> None:
        self.drain_timeout = 30.0
        self.stopping = False
        self._flows: weakref.WeakSet[http.HTTPFlow] = weakref.WeakSet()

    def load(self, loader: Loader) -> None:
        settings.add_options(loader, "jitgate_drain_timeout")

    def configure(self, updated: set[str]) -> None:
        if "jitgate_drain_timeout" in updated:
            self.drain_timeout = settings.value(ctx.options, "jitgate_drain_timeout")

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._flows.add(flow)
        if self.stopping and not meta.refused(flow):
            refuse(flow, GatewayStopping("the gateway is stopping; send the request again"),
                   headers={"Connection": "close"})

    def in_flight(self) -> int:
        return sum(1 for flow in list(self._flows) if flow.live)

    async def done(self) -> None:
        self.stopping = True
        await mitmproxy_compat.stop_listening()
        deadline = time.monotonic() + self.drain_timeout
        logger.info("jitgate: stopping: no new connections, %d flows in flight", self.in_flight(),
                    extra={"event": "stop"})
        while self.in_flight() and time.monotonic() < deadline:
            await asyncio.sleep(_POLL)
        left = self.in_flight()
        if left:
            logger.warning("jitgate: %d flows still in flight after %.0fs; they are cut", left, self.drain_timeout,
                           extra={"event": "stop"})
