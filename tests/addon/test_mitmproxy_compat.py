"""addon/mitmproxy_compat.py: every reach into mitmproxy internals is checked at start.

A needed reach (error answers, raw relay replacement, closing an upstream) that differs from the
mitmproxy it was written for stops the start; the speed-only one (hook dispatch) falls back to
mitmproxy's own code. The last test changes mitmproxy's error builder under a real mitmdump.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import version
from mitmproxy.proxy.layers.http import _http1

from addon import error_answers, hook_dispatch, mitmproxy_compat
from addon.mitmproxy_compat import REACHES, IncompatibleMitmproxy
from jitgate.devstack.gateway import ENTRY, MITMDUMP


@pytest.fixture
def stock() -> Iterator[None]:
    mitmproxy_compat.uninstall()
    yield
    mitmproxy_compat.uninstall()


def test_every_reach_matches_the_mitmproxy_it_was_written_for(stock: None) -> None:
    """Fails on a mitmproxy upgrade that changes what a reach relies on: re-read that code, then the digests."""
    assert version.VERSION == mitmproxy_compat.WRITTEN_FOR
    assert {r.name: r.changed() for r in REACHES} == {r.name: [] for r in REACHES}
    mitmproxy_compat.install()
    assert _http1.make_error_response is error_answers.json_error_response
    assert hook_dispatch.installed()


@pytest.mark.parametrize("reach", [r for r in REACHES if r.needed], ids=lambda r: r.name.split(" (")[0])
def test_a_needed_reach_that_differs_stops_the_start(
    stock: None, monkeypatch: pytest.MonkeyPatch, reach: mitmproxy_compat.Reach
) -> None:
    name = sorted(reach.digests)[0]
    monkeypatch.setitem(reach.digests, name, "0" * 64)
    with pytest.raises(IncompatibleMitmproxy, match=name.replace(".", r"\.")) as err:
        mitmproxy_compat.install()
    assert mitmproxy_compat.WRITTEN_FOR in str(err.value)
    assert _http1.make_error_response is not error_answers.json_error_response  # nothing was patched
    assert not hook_dispatch.installed()


def test_error_answers_need_http1_to_call_the_builder_by_name(stock: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mitmproxy_compat, "_http1_calls_make_error_response", lambda: False)
    with pytest.raises(IncompatibleMitmproxy, match="no longer calls it"):
        mitmproxy_compat.install()


def test_the_speed_only_reach_falls_back_with_a_warning(
    stock: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(hook_dispatch.STOCK_SOURCES, "traverse", "0" * 64)
    with caplog.at_level(logging.WARNING):
        mitmproxy_compat.install()
    assert not hook_dispatch.installed() and "keeping mitmproxy's" in caplog.text
    assert _http1.make_error_response is error_answers.json_error_response  # the needed ones are in


def test_a_real_mitmdump_with_a_changed_error_builder_does_not_start(tmp_path: Path) -> None:
    """A `sitecustomize` swaps mitmproxy's error builder for one with other code, as an upgrade would:
    mitmdump with the jitgate chain logs why and exits instead of serving without JSON errors."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "from mitmproxy.proxy.layers.http import _http1\n"
        "_stock = _http1.make_error_response\n"
        "def make_error_response(status_code, message=''):\n"
        "    return _stock(status_code, message + ' (changed)')\n"
        "_http1.make_error_response = make_error_response\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run(
        [str(MITMDUMP), "--listen-host", "127.0.0.1", "--listen-port", "0", "--set", f"confdir={tmp_path / 'conf'}",
         "-s", str(ENTRY)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "IncompatibleMitmproxy" in out and "_http1.make_error_response" in out, out
