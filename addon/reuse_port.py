"""The proxy's listening socket with SO_REUSEPORT, so N gateway workers share one port.

mitmproxy 12.2.3 binds its TCP servers with `asyncio.start_server(self.handle_stream, host, port)`
in `AsyncioServerInstance.listen` (mitmproxy/proxy/mode_servers.py) and offers no option for
SO_REUSEPORT. asyncio's `start_server` takes `reuse_port=True`; this module hands it that, for
mitmproxy's servers only: `mode_servers` sees a stand-in for its `asyncio` module whose
`start_server` adds the flag (every other name is asyncio's own). The check below makes the
worker refuse to start where mitmproxy binds another way, instead of silently listening alone.
mitmproxy listens before it loads `-s` scripts, so this cannot be an addon: a worker of
`jitgate gateway --workers N` runs `python -m addon.worker`, which installs it and then runs
mitmdump.
"""

from __future__ import annotations

import asyncio
import inspect
from types import ModuleType
from typing import Any

from mitmproxy.proxy import mode_servers

_CALL = "asyncio.start_server(self.handle_stream, host, port)"


class _Asyncio(ModuleType):
    """asyncio, except that `start_server` shares the port while `enabled`."""

    enabled = False

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    async def start_server(*args: Any, **kwargs: Any) -> asyncio.Server:
        if _Asyncio.enabled:
            kwargs.setdefault("reuse_port", True)
        return await asyncio.start_server(*args, **kwargs)


def install() -> None:
    """Put the stand-in in place, on; raises where mitmproxy does not bind through `asyncio.start_server`."""
    _Asyncio.enabled = True
    if isinstance(getattr(mode_servers, "asyncio", None), _Asyncio):
        return
    if _CALL not in inspect.getsource(mode_servers.AsyncioServerInstance.listen):
        raise RuntimeError("SO_REUSEPORT: mitmproxy no longer binds with asyncio.start_server")
    setattr(mode_servers, "asyncio", _Asyncio("asyncio"))  # noqa: B010  (not an exported name)
