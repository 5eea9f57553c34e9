"""A token's `max_requests`, counted for scope_guard (not an addon of the chain).

The count is a conditional DynamoDB counter (jitgate.state.reserve_requests), so it holds across
gateway instances; each gateway reserves uses in small blocks (`jitgate_usage_lease`, the leases
are jitgate.scope_check.UsageLeases) so most requests make no AWS call. One lock per token keeps
two requests of it from both reserving a block.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from jitgate.scope import lease_size
from jitgate.scope_check import UsageLeases
from jitgate.state import reserve_requests
from jitgate.token import Claims


class UsageCounter:
    def __init__(self) -> None:
        self._usage = UsageLeases()
        self._locks: dict[str, asyncio.Lock] = {}

    async def count(self, claims: Claims, *, dynamodb: Any, table: str, lease: int) -> bool:
        """One use of the token's `max_requests`, from this gateway's reservation or a new one."""
        if self._usage.take(claims.jti):
            return True
        if claims.jti in self._usage.exhausted:
            return False
        lock = self._locks.setdefault(claims.jti, asyncio.Lock())
        async with lock:
            if self._usage.take(claims.jti):  # another request refilled it meanwhile
                return True
            if claims.jti in self._usage.exhausted:
                return False
            assert claims.limits.max_requests is not None
            block = lease_size(claims.limits.max_requests, lease)
            granted = await asyncio.to_thread(reserve_requests, dynamodb, table, claims, block)
            if self._usage.full():
                for jti in self._usage.prune(time.time()):
                    self._locks.pop(jti, None)
            return self._usage.granted(claims.jti, claims.exp, granted)
