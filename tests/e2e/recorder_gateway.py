"""A mitmdump process for the recorder's end-to-end tests (the relay that cuts S3 off: tests/relay.py).

`Gateway` runs real `mitmdump` with the given addon scripts and options on a free loopback
port; `kill()` sends SIGKILL (no `done` hook, no flush), `stop()` a clean shutdown.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
MITMDUMP = str(Path(sys.executable).with_name("mitmdump"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gateway:
    def __init__(
        self,
        scripts: Sequence[str | Path],
        options: Mapping[str, str],
        *,
        confdir: Path,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.scripts = [str(s) for s in scripts]
        self.options = dict(options)
        self.confdir = confdir
        self.env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO)}
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = confdir / f"mitmdump-{self.port}.log"

    def start(self, timeout: float = 30.0) -> Gateway:
        argv = [MITMDUMP, "-q", "--listen-host", "127.0.0.1", "--listen-port", str(self.port)]
        for script in self.scripts:
            argv += ["-s", script]
        opts = {"confdir": str(self.confdir), "connection_strategy": "lazy", **self.options}
        for key, value in opts.items():
            argv += ["--set", f"{key}={value}"]
        self.confdir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mitmdump exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError("mitmdump did not listen in time")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(proxy=self.url, verify=str(self.ca_file), timeout=30, **kwargs)  # type: ignore[arg-type]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> Gateway:
        # `with gw.start():` must not start a second mitmdump and orphan the first.
        if self.proc is not None and self.proc.poll() is None:
            return self
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
