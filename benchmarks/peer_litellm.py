"""LiteLLM's proxy as a peer in the gateway benchmark: the tool teams pick to keep provider keys off
jobs, forwarding Cohere rerank to the benchmark's own upstream.

It is installed by the benchmark itself into a virtual environment of its own (never the project's
dependencies) under `~/.cache/jitgate-bench/` (or `$JITGATE_BENCH_CACHE`), once, and reused.

Supply chain: LiteLLM's package was published with a credential-stealing payload in March 2026
(1.82.7 and 1.82.8, a `.pth` file that runs at interpreter start). So the version is pinned exactly
to one released before that, its wheel is downloaded alone and checked against the SHA-256 below
before anything is installed, and the installed environment is refused if any package in it
ships a `.pth` file outside the allow-list (setuptools' own). It runs only on loopback, with fake
keys, and nothing of the project's environment is handed to it but the upstream's CA.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from jitgate.devstack.process import terminate

VERSION = "1.81.13"
WHEEL = f"litellm-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "ae4aea2a55e85993f5f6dd36d036519422d24812a1a3e8540d9e987f2d7a4304"
# `.pth` files that may be in the environment (setuptools' distutils shim and the editable hook).
ALLOWED_PTH = frozenset({"distutils-precedence.pth"})


class PeerUnavailable(RuntimeError):
    """The peer could not be installed or started (the benchmark reports why and goes on)."""


def _cache() -> Path:
    return Path(os.environ.get("JITGATE_BENCH_CACHE", Path.home() / ".cache" / "jitgate-bench"))


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise PeerUnavailable(f"{what} failed ({done.returncode}): {done.stderr.strip()[-400:]}")


def install() -> Path:
    """The peer's venv with `litellm[proxy]=={VERSION}` (installed on first use): its `litellm` script."""
    venv = _cache() / f"litellm-{VERSION}"
    script = venv / "bin" / "litellm"
    if (venv / ".installed").exists() and script.exists():
        _check_pth(venv)
        return script
    venv.parent.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "venv", "--clear", str(venv)], "venv")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    with tempfile.TemporaryDirectory(prefix="litellm-wheel-") as tmp:
        _run([*pip, "download", "--no-deps", "--only-binary=:all:", "-d", tmp, f"litellm=={VERSION}"], "download")
        wheel = Path(tmp) / WHEEL
        if not wheel.exists():
            raise PeerUnavailable(f"the registry gave no {WHEEL}")
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != WHEEL_SHA256:
            raise PeerUnavailable(f"{WHEEL} has SHA-256 {digest}, not the pinned {WHEEL_SHA256}: not installed")
        _run([*pip, "install", "--only-binary=:all:", f"{wheel}[proxy]"], "install")
    _check_pth(venv)
    (venv / ".installed").write_text(VERSION)
    return script


def _check_pth(venv: Path) -> None:
    found = {p.name for p in venv.glob("lib/python*/site-packages/*.pth")}
    unknown = sorted(found - ALLOWED_PTH - {n for n in found if n.startswith("__editable__")})
    if unknown:
        raise PeerUnavailable(f"the peer's environment ships .pth files that run at start: {', '.join(unknown)}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Peer:
    url: str  # http://127.0.0.1:PORT
    master_key: str
    pid: int
    version: str = VERSION


@contextmanager
def litellm_proxy(work: Path, upstream_url: str, upstream_ca: Path, upstream_key: str) -> Iterator[Peer]:
    """LiteLLM's proxy on loopback (one worker, a master key, no database), its model `rerank-v3.5`
    forwarded to `upstream_url` as Cohere with `upstream_key`, trusting `upstream_ca`."""
    script = install()
    master = "sk-bench-" + secrets.token_urlsafe(16)
    config = {
        "model_list": [
            {
                "model_name": "rerank-v3.5",
                "litellm_params": {
                    "model": "cohere/rerank-v3.5",
                    "api_base": upstream_url,
                    "api_key": "os.environ/COHERE_API_KEY",
                },
            }
        ],
        "litellm_settings": {"ssl_verify": str(upstream_ca), "telemetry": False, "drop_params": True},
        "general_settings": {"master_key": master},
    }
    cfg = work / "litellm.yaml"
    cfg.write_text(yaml.safe_dump(config))
    port = _free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(work),
        "COHERE_API_KEY": upstream_key,
        "SSL_CERT_FILE": str(upstream_ca),
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the cost map at start
        "NO_PROXY": "*",
    }
    log = (work / "litellm.log").open("w")
    proc = subprocess.Popen(
        [str(script), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise PeerUnavailable(f"litellm exited {proc.returncode}: {(work / 'litellm.log').read_text()[-600:]}")
            try:
                if httpx.get(f"{url}/health/liveliness", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise PeerUnavailable("litellm did not answer within 180 s")
            time.sleep(0.5)
        yield Peer(url=url, master_key=master, pid=proc.pid)
    finally:
        terminate(proc)
        log.close()
