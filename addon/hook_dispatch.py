"""hook_dispatch: mitmproxy's event dispatch, the same calls in the same order for less CPU.

For every event mitmproxy's `AddonManager.trigger_event` walks its whole addon chain: 36
entries in mitmdump, one of them the script loader that holds the jitgate chain. An HTTP flow is
8 events (four hooks, each followed by `update`), and per addon and event the stock code builds a
generator-based context manager (`safecall`), a coroutine (`invoke_addon`), two generators
(`_iter_hooks`, `traverse`) and the hook's arguments again from `dataclasses.fields` for each
call, although almost no addon has the hook. Under the gateway benchmark's load that was about a
fifth of a bare mitmdump's CPU (docs/performance.md, "Fifth pass").

`install()` replaces `trigger_event` with a loop that makes the same calls: each chain entry and
then its sub-addons (`addons`, read after the entry's own hook, as `traverse` does), hooks found by
`getattr` at the moment of the call (nothing is cached, so addons added, removed or reloaded later
are seen), awaitables awaited, a module bound to a hook's name skipped, anything else not callable
an error. Errors are handled as the stock code does: `AddonHalt` ends the event, `OptionsError`
propagates, any other exception is logged as mitmproxy's "Addon error" and ends that chain entry's
remaining sub-addons only (addon/failsafe.py guards the jitgate hooks against exactly that).

It only replaces code it knows: `install()` compares the stock functions with the sources this
module was written against (mitmproxy 12.2.3, constraints.txt) and leaves mitmproxy as it is,
with a warning, when they differ. tests/addon/test_hook_dispatch.py runs both dispatchers side by side.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import types
from collections.abc import Callable
from typing import Any

from mitmproxy import addonmanager, exceptions, hooks

logger = logging.getLogger(__name__)

# SHA-256 of the stock sources `trigger_event` is made of (`inspect.getsource`), as in mitmproxy 12.2.3.
STOCK_SOURCES = {
    "AddonManager.trigger_event": "b763c59bc4992e33030d38fe5a62368b0437ad4f327ea609b0664db32286a4d9",
    "AddonManager.invoke_addon": "13180532440359de4072c45e3f24aa3ad3b75292ef1ebfa5caa6385160a0be12",
    "AddonManager._iter_hooks": "350b419ab7284091f6341cbeb463bf6071dca027396ab37d0615789def57e7c0",
    "traverse": "bad3d9f88bdf9269a3a1380948222f64da429fcfa2801a38bbed467289d7bd60",
    "safecall": "f2052c18340e99b029865b6c9aae1ae3d5e61e203bbb702e11deb059da7660f1",
}
STOCK: dict[str, Callable[..., Any]] = {
    "AddonManager.trigger_event": addonmanager.AddonManager.trigger_event,
    "AddonManager.invoke_addon": addonmanager.AddonManager.invoke_addon,
    "AddonManager._iter_hooks": addonmanager.AddonManager._iter_hooks,
    "traverse": addonmanager.traverse,
    "safecall": addonmanager.safecall,
}
stock_trigger_event = STOCK["AddonManager.trigger_event"]


def source_digests() -> dict[str, str]:
    """SHA-256 of each stock function's source as installed ("" when it cannot be read)."""
    out = {}
    for name, func in STOCK.items():
        try:
            out[name] = hashlib.sha256(inspect.getsource(func).encode()).hexdigest()
        except (OSError, TypeError):
            out[name] = ""
    return out


def _call(addon: Any, name: str, args: list[Any]) -> Any:
    """Call `addon`'s hook `name`, if it has one: what is left to await, or None.

    A module bound to the hook's name is skipped and anything else not callable is an error, as in
    mitmproxy's `_iter_hooks`.
    """
    func = getattr(addon, name, None)
    if not func:
        return None
    if not callable(func):
        if isinstance(func, types.ModuleType):
            return None
        raise exceptions.AddonManagerError(f"Addon handler {name} ({addon}) not callable")  # type: ignore[no-untyped-call]
    res = func(*args)
    return res if res is not None and inspect.isawaitable(res) else None


async def invoke_subs(subs: Any, name: str, args: list[Any]) -> None:
    """The hooks of `subs` and, depth first, of their own sub-addons (`traverse`'s order).

    A sub-addon's `addons` is read after its own hook ran, as `traverse` reads it. A coroutine is
    made only for an addon that has sub-addons (the script loader, a script), not for each addon.
    """
    for sub in subs:
        pending = _call(sub, name, args)
        if pending is not None:
            await pending
        if hasattr(sub, "addons"):
            await invoke_subs(sub.addons, name, args)


async def trigger_event(self: addonmanager.AddonManager, event: hooks.Hook) -> None:
    """Trigger `event` across all addons: mitmproxy's `trigger_event`, without its per-addon objects."""
    assert isinstance(event, hooks.Hook)
    name = event.name
    args = event.args()
    for addon in self.chain:
        try:
            pending = _call(addon, name, args)
            if pending is not None:
                await pending
            if hasattr(addon, "addons"):
                await invoke_subs(addon.addons, name, args)
        except exceptions.AddonHalt:
            return
        except exceptions.OptionsError:
            raise
        except Exception:
            with addonmanager.safecall():  # mitmproxy's own "Addon error" log line, traceback included
                raise


def installed() -> bool:
    return addonmanager.AddonManager.trigger_event is trigger_event


def install() -> bool:
    """Use this dispatcher if mitmproxy's is the one it was written against; True if it is in use."""
    if installed():
        return True
    found = source_digests()
    changed = sorted(name for name, digest in STOCK_SOURCES.items() if found.get(name) != digest)
    if changed:
        logger.warning(
            "jitgate: mitmproxy's hook dispatch differs from the one hook_dispatch knows (%s); keeping mitmproxy's",
            ", ".join(changed),
        )
        return False
    addonmanager.AddonManager.trigger_event = trigger_event  # type: ignore[method-assign]
    return True


def uninstall() -> None:
    addonmanager.AddonManager.trigger_event = stock_trigger_event  # type: ignore[method-assign]
