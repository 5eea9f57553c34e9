"""`jitgate gateway --workers N` (N > 1): the worker argv, ports resolved once, the supervisor run."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

from jitgate.workers import _OUT_LOCK, Supervisor, reserve_port, worker_id


def _worker_argv(base: list[str], *, wid: str, spool: Path, port: int, metrics_port: int) -> list[str]:
    argv = [sys.executable, "-m", "addon.worker", *base[1:]]  # mitmdump, SO_REUSEPORT on (addon/worker.py)
    argv[argv.index("--listen-port") + 1] = str(port)
    sets = {"jitgate_reuse_port": "true", "jitgate_gateway_id": wid, "jitgate_spool_dir": str(spool)}
    if metrics_port >= 0:
        sets["jitgate_metrics_port"] = str(metrics_port)
    # An option set twice makes mitmproxy 12.2.3 drop the script's options without a word: replace.
    out: list[str] = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "--set" and i + 1 < len(argv) and argv[i + 1].split("=", 1)[0] in sets:
            skip = True
            continue
        out.append(arg)
    for name, value in sets.items():
        out[-2:-2] = ["--set", f"{name}={value}"]  # before `-s <entry>`
    return out


def _make_ca(base: list[str]) -> None:
    """Create the gateway CA before the workers start, so they do not each make a different one."""
    from mitmproxy.certs import CertStore

    confdir = "~/.mitmproxy"
    for i, arg in enumerate(base[:-1]):
        if arg == "--set" and base[i + 1].startswith("confdir="):
            confdir = base[i + 1].split("=", 1)[1]
    path = Path(confdir).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    CertStore.from_store(path, "mitmproxy", 2048)


def _say(message: str) -> None:
    """The supervisor's lines are JSON like the gateway's own (addon/log_json.py): one object a line."""
    line = {"level": "info", "logger": "jitgate.gateway", "event": "workers", "msg": message}
    with _OUT_LOCK:
        print(json.dumps(line), flush=True)


def supervise(
    base: list[str],
    workers: int,
    *,
    gateway_id: str,
    spool_dir: str,
    listen: tuple[str, int],
    metrics: tuple[str, int],
) -> None:
    """Run `workers` copies of the gateway argv `base` until SIGTERM or SIGINT."""
    ident = gateway_id or socket.gethostname()
    _make_ca(base)
    spool_root = Path(spool_dir or "~/.mitmproxy/jitgate-spool").expanduser()
    held, port = reserve_port(*listen)
    metrics_held, metrics_port = reserve_port(*metrics) if metrics[1] >= 0 else (None, -1)
    _say(f"jitgate gateway: {workers} workers on {listen[0]}:{port}, metrics on port {metrics_port}")

    def argv_for(index: int) -> list[str]:
        wid = worker_id(ident, index)
        return _worker_argv(base, wid=wid, spool=spool_root / wid, port=port, metrics_port=metrics_port)

    sup = Supervisor(argv_for, workers, say=_say)
    sup.handle_signals()
    try:
        sup.start().run()
    finally:
        held.close()
        if metrics_held is not None:
            metrics_held.close()
