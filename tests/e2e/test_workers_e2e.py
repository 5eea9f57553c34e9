"""`jitgate gateway --workers 2`: two real mitmdump workers on one port, their supervisor, shared limits."""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from jitgate.devstack.aws import Stack
from jitgate.devstack.gateway import REPO, Gateway
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.upstream import Upstream
from tests.reliability.harness import client, kms_token, rerank, write_policy

JITGATE = Path(sys.executable).with_name("jitgate")
_STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")
_PORTS = re.compile(r"workers on .*?:(\d+), metrics on port (\d+)")


@dataclass
class Fleet:
    proc: subprocess.Popen[str]
    log: collections.deque[str]
    port: int
    metrics_port: int
    confdir: Path
    spool: Path  # no bucket: records stay here (the e2e bucket holds other tests' audit)

    def pids(self) -> dict[int, int]:
        """worker index -> pid of its latest start."""
        out: dict[int, int] = {}
        for line in list(self.log):
            m = _STARTED.search(line)
            if m:
                out[int(m.group(1))] = int(m.group(2))
        return out

    def gateway(self) -> Gateway:
        """The shared port as a Gateway, for the harness's clients."""
        return Gateway(proc=self.proc, port=self.port, confdir=self.confdir)  # type: ignore[arg-type]

    def ready(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False


def _wait(what: Callable[[], bool], fleet: Fleet, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline or fleet.proc.poll() is not None:
            raise AssertionError("waited in vain:\n" + "\n".join(fleet.log))
        time.sleep(0.2)


@pytest.fixture(scope="module")
def upstream(aws_stack: Stack) -> Iterator[Upstream]:
    with Upstream(api_keys=aws_stack.secrets.values()) as up:
        yield up


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, oidc_issuer: OidcIssuer, upstream: Upstream, broker: str,
    aws_stack: Stack, moto_server: str,
) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("workers")
    policy = write_policy(work, oidc_issuer.url, upstream)
    ca = work / "upstream-ca.pem"
    ca.write_bytes(upstream.ca_pem())
    confdir = work / "mitmproxy"
    argv = [
        str(JITGATE), "gateway", "--workers", "2", "--listen-port", "0", "--metrics-port", "0",
        "--policy", str(policy), "--jwks-url", f"{broker}/.well-known/jwks.json", "--table", aws_stack.table,
        "--issuer", broker, "--aws-endpoint", moto_server,
        "--upstream-ca", str(ca), "--spool-dir", str(work / "spool"), "--gateway-id", "fleet",
        "--set", f"confdir={confdir}", "--set", "jitgate_segment_ms=300", "--set", "jitgate_revocation_refresh=0.5",
        "--set", "jitgate_revocation_staleness=3", "--set", "jitgate_upload_backoff_max_ms=1000",
    ]
    env = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper()}
    env.update({"PYTHONUNBUFFERED": "1", "AWS_REGION": aws_stack.region, "AWS_MAX_ATTEMPTS": "1"})
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: collections.deque[str] = collections.deque(maxlen=2000)

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line.rstrip())

    threading.Thread(target=drain, daemon=True).start()
    fl = Fleet(proc, log, 0, 0, confdir, work / "spool")
    try:
        _wait(lambda: any(_PORTS.search(line) for line in list(log)), fl)
        m = next(_PORTS.search(line) for line in list(log) if _PORTS.search(line))
        assert m is not None
        fl.port, fl.metrics_port = int(m.group(1)), int(m.group(2))
        _wait(lambda: sum("proxy listening" in line for line in list(log)) >= 2 and fl.ready(), fl)
        yield fl
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def test_two_workers_share_the_port_and_each_records_under_its_own_id(
    fleet: Fleet, upstream: Upstream, tmp_path: Path, mint: Callable[..., dict[str, Any]], aws_stack: Stack,
    moto_server: str,
) -> None:
    gw = fleet.gateway()
    bundle = gw.client_bundle(tmp_path / "bundle.pem")
    token = mint("cohere-test")["token"]
    for _ in range(24):  # a new connection each time: the kernel picks a worker per connection
        with client(gw, bundle, token) as c:
            assert rerank(c, upstream).status_code == 200

    def both_recorded() -> bool:
        return all(any((fleet.spool / f"fleet-w{i}").rglob("*.jsonl")) for i in (0, 1))

    _wait(both_recorded, fleet)


def test_a_request_limit_holds_across_the_workers(
    fleet: Fleet, upstream: Upstream, tmp_path: Path, broker: str, aws_stack: Stack, moto_server: str
) -> None:
    gw = fleet.gateway()
    bundle = gw.client_bundle(tmp_path / "bundle.pem")
    token = kms_token(aws_stack, moto_server, broker, limits={"max_requests": 4})
    statuses = []
    for _ in range(12):
        with client(gw, bundle, token) as c:
            statuses.append(rerank(c, upstream).status_code)
    assert statuses.count(200) == 4, statuses
    assert set(statuses) == {200, 429}


def test_a_killed_worker_is_restarted_while_the_other_answers(
    fleet: Fleet, upstream: Upstream, tmp_path: Path, mint: Callable[..., dict[str, Any]]
) -> None:
    gw = fleet.gateway()
    bundle = gw.client_bundle(tmp_path / "bundle.pem")
    token = mint("cohere-test")["token"]
    victim = fleet.pids()[0]
    os.kill(victim, signal.SIGKILL)
    for _ in range(10):  # the survivor answers every new connection meanwhile
        with client(gw, bundle, token) as c:
            assert rerank(c, upstream).status_code == 200
    _wait(lambda: fleet.pids()[0] != victim, fleet)
    _wait(lambda: sum("proxy listening" in line for line in list(fleet.log)) >= 3 and fleet.ready(), fleet)
    with client(gw, bundle, token) as c:
        assert rerank(c, upstream).status_code == 200


def test_sigterm_stops_every_worker(fleet: Fleet) -> None:
    pids = list(fleet.pids().values())
    fleet.proc.send_signal(signal.SIGTERM)
    assert fleet.proc.wait(timeout=60) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
