"""The revocation list a gateway holds: revoked `jti`s pulled from DynamoDB by a background thread.

The pull never runs on mitmproxy's event loop. A failed pull keeps the old list and lets it age;
`fresh()` says whether the last good pull is within the staleness bound, and token_gate refuses
every request when it is not (fail closed). The thread also runs an optional `tick` callback
each round (token_gate uses it for routine JWKS refreshes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from jitgate.state import fetch_revocations

logger = logging.getLogger(__name__)


class RevocationList:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._monotonic = monotonic
        self.dynamodb: Any = None
        self.table = ""
        self.interval = 2.0
        self.staleness = 5.0
        self.revoked: frozenset[str] = frozenset()
        self.refreshed_at = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __contains__(self, jti: str) -> bool:
        return jti in self.revoked

    def fresh(self) -> bool:
        return self._monotonic() - self.refreshed_at <= self.staleness

    def refresh(self) -> bool:
        """Pull the list once; on failure keep the old one and let it go stale."""
        try:
            revoked = fetch_revocations(self.dynamodb, self.table, now=self._clock())
        except Exception as exc:  # any failure only ages the list; staleness refuses later
            logger.warning("jitgate: revocation refresh failed (%s)", type(exc).__name__)
            return False
        self.revoked = revoked
        self.refreshed_at = self._monotonic()
        return True

    def start(self, tick: Callable[[], None] | None = None) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(tick,), name="jitgate-revocations", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self, tick: Callable[[], None] | None) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()
            if tick is not None:
                tick()
