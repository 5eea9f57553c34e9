"""Pick up a changed policy without a restart; keep the last good one when the change is bad.

Every `jitgate_policy_refresh` seconds the policy's version is checked (a file's mtime and size,
an S3 object's ETag: one HEAD). When it changed and the new text is a valid policy, every addon
is configured again with `jitgate_policy` as the updated option, so each one takes the new policy
the way it took the first. When the new text is not valid (or cannot be read), the gateway goes on
with the last good policy and says so in the log (`event: policy`, code `policy_invalid`), on
every check until the location holds a valid policy again. At start a bad policy stops the start
(addon/settings.py `policy_from`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mitmproxy import ctx, hooks
from mitmproxy.addonmanager import Loader

from addon import settings
from jitgate.errors import PolicyError

logger = logging.getLogger(__name__)


class PolicyRefresh:
    def __init__(self) -> None:
        self.interval = 30.0
        self._task: asyncio.Task[None] | None = None

    def load(self, loader: Loader) -> None:
        settings.add_options(loader, *settings.SHARED, "jitgate_policy_refresh")

    def configure(self, updated: set[str]) -> None:
        if "jitgate_policy_refresh" in updated:
            self.interval = settings.value(ctx.options, "jitgate_policy_refresh")  # 0: never re-read

    def running(self) -> None:
        if self.interval > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    def done(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check()

    async def check(self) -> bool:
        """One check; True when a new policy was taken."""
        location = ctx.options.jitgate_policy
        try:
            new = await asyncio.to_thread(settings.POLICIES.refresh, location)
        except PolicyError as exc:
            kept = settings.POLICIES.current(location).version
            logger.error(
                "jitgate: the policy at %s is not valid; still running on version %s", location, kept,
                extra={"event": "policy", "code": exc.code, "error": exc.message},
            )
            return False
        except Exception as exc:  # never let the loop die: the next check tries again
            logger.error("jitgate: policy check failed (%s)", type(exc).__name__, extra={"event": "policy"})
            return False
        if new is None:
            return False
        try:
            self._reconfigure()
        except Exception as exc:  # an addon refused it (an OptionsError names the option)
            logger.error(
                "jitgate: policy version %s of %s not taken by every addon (%s)", new.version, location,
                type(exc).__name__, extra={"event": "policy", "code": PolicyError.code},
            )
            return False
        logger.info("jitgate: policy version %s of %s in use", new.version, location, extra={"event": "policy"})
        return True

    def _reconfigure(self) -> None:
        master: Any = ctx.master
        master.addons.trigger(hooks.ConfigureHook({"jitgate_policy"}))
