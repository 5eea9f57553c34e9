"""The recorder under faults, with real mitmdump, a real HTTPS upstream and a moto server.

The gateway runs the recorder behind a small test addon that plays token_gate (identity from
test headers), so these tests need nothing but the recorder. Every request carries a unique
marker in its rerank query; a record "arrived" when an object in the bucket holds it.
"""

from __future__ import annotations

import gzip
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import httpx
import pytest

from jitgate.devstack.aws import Stack
from jitgate.devstack.upstream import Upstream
from tests.e2e.recorder_gateway import REPO, Gateway
from tests.relay import Relay

DOCS = ["refund policy for damaged goods", "shipping times to Norway", "warranty terms for laptops"]


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[tuple[Upstream, str, Path]]:
    key = "up-" + secrets.token_urlsafe(20)
    with Upstream(api_keys=[key]) as up:
        ca = tmp_path / "upstream-ca.pem"
        ca.write_bytes(up.ca_pem())
        yield up, key, ca


def _gateway(tmp_path: Path, ca: Path, env: dict[str, str] | None = None, **options: Any) -> Gateway:
    opts = {
        "ssl_verify_upstream_trusted_ca": str(ca),
        "jitgate_spool_dir": str(tmp_path / "spool"),
        "jitgate_segment_ms": "300",
        "jitgate_fsync_ms": "100",
        "jitgate_upload_backoff_max_ms": "1000",
        **{k: str(v) for k, v in options.items()},
    }
    scripts = [REPO / "tests/e2e/recorder_meta.py"]
    return Gateway(scripts, opts, confdir=tmp_path / "conf", env={"AWS_MAX_ATTEMPTS": "1", **(env or {})})


def _rerank(client: httpx.Client, up: Upstream, key: str, marker: str) -> httpx.Response:
    return client.post(
        f"{up.url}/v2/rerank",
        json={"model": "rerank-v3.5", "query": f"refund {marker}", "documents": DOCS},
        headers={"Authorization": f"Bearer {key}", "X-Test-Sub": "alice", "X-Test-Jti": "jti-" + marker},
    )


def _arrived(bucket: str, gateway_id: str) -> list[dict[str, Any]]:
    s3 = boto3.client("s3")
    out: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="sessions/"):
        for obj in page.get("Contents", []):
            if f"/{gateway_id}-" in obj["Key"]:
                body = gzip.decompress(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
                out += [json.loads(line) for line in body.splitlines()]
    return out


def _markers(records: list[dict[str, Any]]) -> set[str]:
    return {r["rerank_query"].split()[-1] for r in records if r.get("rerank_query")}


def _wait_for(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.3)
    return check()


def _load(gw: Gateway, up: Upstream, key: str, n: int, threads: int = 8) -> list[tuple[str, int]]:
    markers = [secrets.token_hex(6) for _ in range(n)]

    def one(chunk: list[str]) -> list[tuple[str, int]]:
        with gw.client() as c:
            return [(m, _rerank(c, up, key, m).status_code) for m in chunk]

    chunks = [markers[i::threads] for i in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        return [r for part in pool.map(one, chunks) for r in part]


def _outage(
    tmp_path: Path,
    upstream: tuple[Upstream, str, Path],
    aws_stack: Stack,
    moto_server: str,
    *,
    before: int,
    rounds: int,
    per_round: int,
    backoff_max_ms: int,
) -> None:
    """Load while S3 is cut off (uploads fail, segments pile up), then S3 back: all arrive once."""
    up, key, ca = upstream
    target = urlparse(moto_server)
    relay = Relay((target.hostname or "127.0.0.1", target.port or 80))
    relay.up = False
    gateway_id = "gw-outage-" + secrets.token_hex(3)
    gw = _gateway(
        tmp_path,
        ca,
        jitgate_bucket=aws_stack.bucket,
        jitgate_aws_endpoint=relay.url,
        jitgate_gateway_id=gateway_id,
        jitgate_upload_backoff_max_ms=backoff_max_ms,
    )
    try:
        with gw:
            results = _load(gw, up, key, before)
            assert {s for _, s in results} == {200}  # S3 down does not stop the data path
            for _ in range(rounds):
                time.sleep(1.5)  # segments rotate and their uploads fail while S3 is away
                results += _load(gw, up, key, per_round)
            assert _arrived(aws_stack.bucket, gateway_id) == []
            assert list((tmp_path / "spool" / "closed").glob("*.jsonl"))
            more = _load(gw, up, key, 40)  # still under load when S3 comes back
            relay.up = True
            sent = {m for m, _ in results + more}
            assert {s for _, s in results + more} == {200}
            assert _wait_for(lambda: _markers(_arrived(aws_stack.bucket, gateway_id)) >= sent, 60)
    finally:
        relay.close()
    records = _arrived(aws_stack.bucket, gateway_id)
    assert len({r["record_id"] for r in records}) == len(sent)
    assert all(r["sub"] == "alice" and r["status"] == 200 for r in records)


def test_s3_unreachable_then_back_every_record_arrives(
    tmp_path: Path, upstream: tuple[Upstream, str, Path], aws_stack: Stack, moto_server: str
) -> None:
    _outage(tmp_path, upstream, aws_stack, moto_server, before=160, rounds=1, per_round=0, backoff_max_ms=1000)


@pytest.mark.slow
def test_long_s3_outage_under_sustained_load(
    tmp_path: Path, upstream: tuple[Upstream, str, Path], aws_stack: Stack, moto_server: str
) -> None:
    """~30 s without S3 while traffic keeps coming, the backoff at its 5 s ceiling."""
    _outage(tmp_path, upstream, aws_stack, moto_server, before=300, rounds=16, per_round=150, backoff_max_ms=5000)


def test_sigkill_under_load_then_restart_every_completed_flow_arrives(
    tmp_path: Path, upstream: tuple[Upstream, str, Path], aws_stack: Stack
) -> None:
    up, key, ca = upstream
    gateway_id = "gw-kill-" + secrets.token_hex(3)
    opts = {
        "jitgate_bucket": aws_stack.bucket,
        "jitgate_gateway_id": gateway_id,
        "jitgate_segment_ms": "30000",
    }  # records sit in the open segment when the kill comes
    gw = _gateway(tmp_path, ca, **opts).start()
    completed: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def worker() -> None:
        with gw.client() as c:
            while not stop.is_set():
                marker = secrets.token_hex(6)
                try:
                    resp = _rerank(c, up, key, marker)
                except httpx.HTTPError:
                    continue
                if resp.status_code == 200:
                    with lock:
                        completed.append(marker)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    assert _wait_for(lambda: len(completed) >= 150, 60)
    gw.kill()
    stop.set()
    for t in threads:
        t.join()
    assert _markers(_arrived(aws_stack.bucket, gateway_id)) < set(completed)  # not shipped before the kill
    restarted = _gateway(tmp_path, ca, **opts)
    restarted.port = gw.port
    with restarted.start():
        assert _wait_for(lambda: _markers(_arrived(aws_stack.bucket, gateway_id)) >= set(completed), 30)


def test_spool_full_refuses_and_forwards_nothing_unrecorded(
    tmp_path: Path, upstream: tuple[Upstream, str, Path]
) -> None:
    up, key, ca = upstream
    gw = _gateway(tmp_path, ca, jitgate_spool_max_bytes=100_000, jitgate_record_body_cap=1024)
    statuses: list[tuple[str, int, str]] = []
    with gw, gw.client() as c:
        for _ in range(60):
            marker = secrets.token_hex(6)
            resp = _rerank(c, up, key, marker)
            statuses.append((marker, resp.status_code, resp.json().get("code", "") if resp.status_code != 200 else ""))
    ok = [m for m, s, _ in statuses if s == 200]
    refused = [(m, code) for m, s, code in statuses if s != 200]
    assert ok and refused
    assert {code for _, code in refused} == {"audit_unavailable"}
    first_refusal = [s for _, s, _ in statuses].index(503)
    assert all(s == 503 for _, s, _ in statuses[first_refusal:])  # nothing gets through once full
    forwarded = {json.loads(r.body)["query"].split()[-1] for r in up.received if r.path == "/v2/rerank"}
    spooled = [json.loads(line) for p in (tmp_path / "spool").rglob("*.jsonl") for line in p.read_bytes().splitlines()]
    assert forwarded == set(ok)
    # every forwarded request has its record; refusals are recorded too while the headroom lasts
    assert _markers([r for r in spooled if r["status"] == 200]) == forwarded
    assert {r["error"] for r in spooled if r["status"] != 200} <= {"audit_unavailable"}


def test_clean_stop_ships_the_open_segment(
    tmp_path: Path, upstream: tuple[Upstream, str, Path], aws_stack: Stack
) -> None:
    up, key, ca = upstream
    gateway_id = "gw-stop-" + secrets.token_hex(3)
    gw = _gateway(
        tmp_path, ca, jitgate_bucket=aws_stack.bucket, jitgate_gateway_id=gateway_id, jitgate_segment_ms=600_000
    )  # nothing rotates by age during the test
    with gw:
        sent = {m for m, s in _load(gw, up, key, 30, threads=3) if s == 200}
        assert _arrived(aws_stack.bucket, gateway_id) == []
    assert gw.proc is not None and gw.proc.returncode is not None
    assert _markers(_arrived(aws_stack.bucket, gateway_id)) == sent
    assert not list((tmp_path / "spool").rglob("*.jsonl"))


def test_disk_full_refuses_and_forwards_at_most_the_flow_that_found_out(
    tmp_path: Path, upstream: tuple[Upstream, str, Path]
) -> None:
    """A real write error (EFBIG from RLIMIT_FSIZE, as ENOSPC would be): the flow whose record
    failed gets 503 instead of its answer, every later flow is refused before forwarding."""
    up, key, ca = upstream
    # One segment for the whole test: with the 300 ms rotation of the other fault tests, a slow machine
    # (~40 ms a flow) rotated before any segment reached the 40 kB cap and no write ever failed.
    gw = _gateway(tmp_path, ca, env={"JITGATE_TEST_FSIZE": "40000"}, jitgate_segment_ms=600_000)
    statuses: list[tuple[str, int, str]] = []
    with gw, gw.client() as c:
        for _ in range(60):
            marker = secrets.token_hex(6)
            resp = _rerank(c, up, key, marker)
            statuses.append((marker, resp.status_code, resp.json().get("code", "") if resp.status_code != 200 else ""))
    codes = [s for _, s, _ in statuses]
    first = codes.index(503)
    assert first > 0 and all(s == 503 for s in codes[first:])
    assert {code for _, _, code in statuses[first:]} == {"audit_unavailable"}
    forwarded = [json.loads(r.body)["query"].split()[-1] for r in up.received if r.path == "/v2/rerank"]
    spooled = [json.loads(line) for p in (tmp_path / "spool").rglob("*.jsonl") for line in p.read_bytes().splitlines()]
    answered = [m for m, s, _ in statuses if s == 200]
    assert _markers([r for r in spooled if r["status"] == 200]) == set(answered)  # every answer given is recorded
    assert forwarded == [*answered, statuses[first][0]]  # only the flow that hit the error went out unrecorded
