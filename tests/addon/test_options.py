"""Every gateway option is declared once (addon/settings.py) and each addon declares what it reads."""

from __future__ import annotations

import inspect
import re
import sys
from typing import Any

import pytest

from addon import jitgate_addons, mitmproxy_compat, settings
from tests.addon.jit_fixtures import POLICY as _POLICY

# Importing the chain installs mitmproxy_compat's patches: the other tests of this process run on stock mitmproxy.
mitmproxy_compat.uninstall()

_NAME = re.compile(r"\bjitgate_[a-z_]+\b")


class _Recorder:
    """A stand-in for mitmproxy's Loader that keeps the options an addon declares."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def add_option(self, name: str, typespec: type, default: Any, help: str) -> None:
        option = settings.OPTIONS[name]
        assert (typespec, default, help) == (option.typespec, option.default, option.help)
        self.names.append(name)


def _addons() -> list[Any]:
    return list(jitgate_addons.addons)


def _modules() -> dict[str, list[Any]]:
    """The chain's addons by module: an addon may act through another of its module
    (credential_inject's retry reads the injector's options)."""
    out: dict[str, list[Any]] = {}
    for addon in _addons():
        out.setdefault(type(addon).__module__, []).append(addon)
    return out


@pytest.mark.parametrize("module", sorted(_modules()))
def test_an_addon_declares_every_option_it_reads(module: str) -> None:
    loader = _Recorder()
    for addon in _modules()[module]:
        if hasattr(addon, "load"):
            addon.load(loader)
    source = inspect.getsource(sys.modules[module])
    read = set(_NAME.findall(source)) & set(settings.OPTIONS)
    assert read <= set(loader.names), sorted(read - set(loader.names))


def test_every_option_is_declared_by_an_addon_of_the_chain() -> None:
    declared: set[str] = set()
    for addon in _addons():
        loader = _Recorder()
        if hasattr(addon, "load"):
            addon.load(loader)
        declared |= set(loader.names)
    assert declared == set(settings.OPTIONS)


class _Reads:
    """Options whose values are the defaults, that keep the names read."""

    def __init__(self, policy: str) -> None:
        self.read: set[str] = set()
        self._values = {name: o.default for name, o in settings.OPTIONS.items()}
        self._values |= {
            "jitgate_policy": policy, "jitgate_table": "t", "jitgate_jwks_url": "https://b/.well-known/jwks.json",
            "confdir": "~/.mitmproxy",
        }

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "read":
            raise AttributeError(name)
        self.read.add(name)
        return self._values[name]

    def __contains__(self, name: str) -> bool:
        return name in self._values


@pytest.mark.parametrize(
    ("build", "kind"),
    [
        (lambda o: settings.token_gate(o, "/.well-known/jwks.json"), settings.TokenGateSettings),
        (settings.scope_guard, settings.ScopeGuardSettings),
        (settings.leak_guard, settings.LeakGuardSettings),
        (settings.approval_hold, settings.ApprovalHoldSettings),
        (settings.session_recorder, settings.SessionRecorderSettings),
    ],
)
def test_a_settings_object_reads_only_the_options_its_addon_declares(build: Any, kind: Any, tmp_path: Any) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(_POLICY)
    opts = _Reads(str(policy))
    assert isinstance(build(opts), kind)
    assert {n for n in opts.read if n.startswith("jitgate_")} <= set(kind.NAMES)
    assert set(kind.NAMES) <= set(settings.OPTIONS)
