"""Run a real `mitmdump` (bare, or with the jitgate addon chain) on a free loopback port.

Used by `jitgate gateway`, `jitgate dev`, the demo, the benchmarks and the end-to-end tests.

`start_gateway(...)` starts it with the right options, waits until it listens (mitmdump prints
its port, so port 0 is race-free), and returns a `Gateway` with its URL, its CA and a client
bundle (public roots + gateway CA) for SSL_CERT_FILE / REQUESTS_CA_BUNDLE. `stop()` ends it.
"""

from __future__ import annotations

import collections
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import certifi

REPO = Path(__file__).resolve().parents[2]
ENTRY = REPO / "addon" / "jitgate_addons.py"
MITMDUMP = Path(sys.executable).with_name("mitmdump")
_LISTENING = re.compile(r"proxy listening at .*?:(\d+)")
_PG_LISTENING = re.compile(r"postgres listening at .*?:(\d+)")
# mitmproxy options every gateway runs with, however it is started. mitmdump's flow output
# (`flow_detail` above 0) prints each request's URL, query string and headers to stdout, and so
# tokens and secrets to the logs: off. addon/log_json.py keeps it off if a later `--set` turns it on.
GATEWAY_OPTIONS: dict[str, str] = {"flow_detail": "0", "connection_strategy": "lazy"}
_METRICS = re.compile(r"jitgate metrics listening at (http://[^\s\"',]+)")  # a JSON log line or plain
_PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "NO_PROXY")


def write_bundle(path: Path, *pems: bytes) -> Path:
    """A CA bundle: the public roots plus `pems` (mitmproxy and `requests` both replace the roots)."""
    path.write_bytes(Path(certifi.where()).read_bytes() + b"".join(b"\n" + p for p in pems))
    return path


@dataclass
class Gateway:
    proc: subprocess.Popen[str]
    port: int
    confdir: Path
    log: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=400))
    pg_port: int | None = None  # the Postgres listener's port, when `jitgate_pg_listen` is set
    reader: threading.Thread | None = None  # fills `log`; done once the process closed its output

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def proxy_url(self, token: str | None = None) -> str:
        return f"http://jit:{token}@127.0.0.1:{self.port}" if token else self.url

    @property
    def ca_pem(self) -> bytes:
        return (self.confdir / "mitmproxy-ca-cert.pem").read_bytes()

    def client_bundle(self, path: Path) -> Path:
        return write_bundle(path, self.ca_pem)

    def metrics_url(self, timeout: float = 10.0) -> str:
        """The URL of /metrics, /healthz and /readyz (started with `jitgate_metrics_port`)."""
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.log):
                m = _METRICS.search(line)
                if m:
                    return m.group(1)
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the gateway serves no metrics:\n" + "\n".join(self.log))
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.reader is not None:
            self.reader.join(timeout=10)  # every last line in `log`

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def jitgate_options(
    *,
    policy: Path,
    jwks_url: str,
    table: str,
    aws_endpoint: str,
    region: str = "us-east-1",
    upstream_ca: Path | None = None,
    revocation_refresh: float = 2.0,
    revocation_staleness: float = 5.0,
) -> dict[str, str]:
    opts = {
        "jitgate_policy": str(policy),
        "jitgate_jwks_url": jwks_url,
        "jitgate_table": table,
        "jitgate_aws_endpoint": aws_endpoint,
        "jitgate_aws_region": region,
        "jitgate_revocation_refresh": str(revocation_refresh),
        "jitgate_revocation_staleness": str(revocation_staleness),
    }
    if upstream_ca is not None:
        opts["jitgate_upstream_ca"] = str(upstream_ca)
    return opts


def mitmdump_argv(
    *,
    listen_host: str,
    listen_port: int,
    options: Mapping[str, str],
    script: Path | None = ENTRY,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The one argv every gateway runs: `jitgate gateway`, the dev stack, the image and the unit.

    GATEWAY_OPTIONS come first and `options` after, so a caller may change connection_strategy;
    flow_detail stays 0 whatever it says (addon/log_json.py).
    """
    argv = [str(MITMDUMP), "--listen-host", listen_host, "--listen-port", str(listen_port)]
    for name, value in {**GATEWAY_OPTIONS, **options}.items():
        argv += ["--set", f"{name}={value}"]
    argv += list(extra_args)
    if script is not None:
        argv += ["-s", str(script)]
    return argv


def start_gateway(
    workdir: Path,
    *,
    options: Mapping[str, str],
    script: Path | None = ENTRY,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 30.0,
    listen_port: int = 0,
) -> Gateway:
    """Start mitmdump with `script` (None: bare) and `--set` options on `listen_port` (0: a free
    one); wait until it listens."""
    confdir = workdir / "mitmproxy"
    confdir.mkdir(parents=True, exist_ok=True)
    argv = mitmdump_argv(
        listen_host="127.0.0.1",
        listen_port=listen_port,
        options={"confdir": str(confdir), **options},
        script=script,
        extra_args=extra_args,
    )
    return launch(argv, confdir=confdir, env=env, bare=script is None, timeout=timeout)


def launch(
    argv: Sequence[str],
    *,
    confdir: Path,
    env: Mapping[str, str] | None = None,
    bare: bool = False,
    timeout: float = 30.0,
    log_lines: int = 400,
) -> Gateway:
    """Run `argv` (mitmdump, or `jitgate gateway` that becomes it) listening on port 0; wait until ready.

    Every line it writes, stdout and stderr, is kept in `Gateway.log` (the last `log_lines`).
    """
    child_env = {k: v for k, v in (os.environ if env is None else env).items() if k not in _PROXY_ENV}
    # Its output is a pipe: unbuffered, or the "listening" line may never reach us.
    child_env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        list(argv), cwd=REPO, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    log: collections.deque[str] = collections.deque(maxlen=log_lines)
    port: int | None = None
    deadline = time.monotonic() + timeout
    while port is None:
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=5)
            raise RuntimeError("mitmdump exited before listening:\n" + "\n".join(log))
        log.append(line.rstrip())
        m = _LISTENING.search(line)
        if m:
            port = int(m.group(1))
        elif time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("mitmdump did not start listening:\n" + "\n".join(log))
    gateway = Gateway(proc=proc, port=port, confdir=confdir, log=log)

    def _drain() -> None:
        assert proc.stdout is not None
        for rest in proc.stdout:
            log.append(rest.rstrip())

    gateway.reader = threading.Thread(target=_drain, daemon=True)
    gateway.reader.start()
    # mitmdump listens before a failing script makes it exit: probe until the chain answers.
    # A CONNECT to a host of no connection is refused (403) by jitgate and tunnelled (200) bare.
    want = "200" if bare else "403"
    # With a Postgres listener asked for, ready once it said where it listens too.
    pg = "--pg-listen" in argv or any(a.startswith("jitgate_pg_listen=") and a != "jitgate_pg_listen=" for a in argv)
    while True:
        if proc.poll() is not None:
            raise RuntimeError("mitmdump exited during start:\n" + "\n".join(log))
        if _probe(port) == want and (not pg or _pg_port(gateway)):
            return gateway
        if time.monotonic() > deadline:
            gateway.stop()
            raise RuntimeError("mitmdump never became ready:\n" + "\n".join(log))
        time.sleep(0.1)


def _pg_port(gateway: Gateway) -> bool:
    """Whether the Postgres listener said where it listens (its line is in the log); sets `pg_port`."""
    for line in list(gateway.log):
        m = _PG_LISTENING.search(line)
        if m:
            gateway.pg_port = int(m.group(1))
            return True
    return False


def _probe(port: int) -> str | None:
    """The status code of a CONNECT to a host that no policy names, or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"CONNECT jitgate-probe.invalid:443 HTTP/1.1\r\nHost: jitgate-probe.invalid:443\r\n\r\n")
            line = sock.recv(256).split(b"\r\n", 1)[0].decode("latin-1")
    except OSError:
        return None
    parts = line.split()
    return parts[1] if len(parts) > 1 else None
