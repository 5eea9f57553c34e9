"""`jitgate_reuse_port`: the proxy's listening socket with SO_REUSEPORT, so N workers share one port.

mitmproxy 12.2.3 binds its TCP servers with `asyncio.start_server(self.handle_stream, host, port)`
in `AsyncioServerInstance.listen` (mitmproxy/proxy/mode_servers.py) and offers no option for
SO_REUSEPORT. asyncio's `start_server` takes `reuse_port=True`; this module hands it that, for
mitmproxy's servers only: `mode_servers` sees a stand-in for its `asyncio` module whose
`start_server` adds the flag while the option is on (every other name is asyncio's own). The
check below makes the gateway refuse to start where mitmproxy binds another way, instead of
silently listening alone. `jitgate gateway --workers N` (jitgate/workers.py) turns it on.
"""

from __future__ import annotations

import asyncio
import inspect
from types import ModuleType
from typing import Any

from mitmproxy import ctx
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy import mode_servers

from addon import settings

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
    """Put the stand-in in place; raises where mitmproxy does not bind through `asyncio.start_server`."""
    if isinstance(getattr(mode_servers, "asyncio", None), _Asyncio):
        return
    if _CALL not in inspect.getsource(mode_servers.AsyncioServerInstance.listen):
        raise RuntimeError("jitgate_reuse_port: mitmproxy no longer binds with asyncio.start_server")
    setattr(mode_servers, "asyncio", _Asyncio("asyncio"))  # noqa: B010  (not an exported name)


class ReusePort:
    def load(self, loader: Loader) -> None:
        settings.add_options(loader, "jitgate_reuse_port")

    def configure(self, updated: set[str]) -> None:
        if "jitgate_reuse_port" in updated:
            if ctx.options.jitgate_reuse_port:
                try:
                    install()
                except RuntimeError as exc:
                    raise settings.options_error(str(exc)) from None
            _Asyncio.enabled = bool(ctx.options.jitgate_reuse_port)
