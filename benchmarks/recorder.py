"""Benchmark the session recorder: records per second, S3 PUTs per 10,000 flows, bytes per flow.

Drives the real `SessionRecorder` addon (mitmproxy test context, its `request` and `response`
hooks, the writer thread, the spool and the uploader) with realistic rerank flows, shipping to
an in-process moto S3. The baseline, measured in the same run on the same flows, is mitmproxy's
own flow-file writer (`mitmproxy.io.FlowWriter`, what `mitmdump -w` does), so the ratio says
what recording costs next to the cheapest way mitmproxy itself keeps a flow.

    .venv/bin/python benchmarks/recorder.py --json [--flows 10000] [--docs 20] [--concurrency 64]
        [--gateway-requests 300]

It also measures the latency a request sees through a real `mitmdump` running the recorder
against the same gateway without it (requests interleaved, baseline in the same run).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import boto3
from mitmproxy import io as mio
from mitmproxy.test import taddons, tflow
from moto import mock_aws

from addon import meta
from addon.session_recorder import SessionRecorder
from jitgate.records import Decision
from jitgate.token import Claims, Limits, Scope

WORDS = [
    "refund",
    "policy",
    "shipping",
    "warranty",
    "laptop",
    "battery",
    "return",
    "order",
    "invoice",
    "customer",
    "support",
    "delivery",
]


def _flows(n: int, docs: int, seed: int = 1) -> list[Any]:
    rng = random.Random(seed)
    claims = Claims(
        iss="https://broker.bench",
        aud="jitgate",
        sub="repo:acme/search-ranker:ref:refs/heads/main",
        iat=0,
        nbf=0,
        exp=2**31,
        jti="bench-jti-0001",
        conn="cohere-prod",
        scope=Scope(operations=("rerank",)),
        limits=Limits(),
        mask="default",
        job="bench",
    )
    out = []
    for i in range(n):
        documents = [" ".join(rng.choices(WORDS, k=rng.randint(20, 60))) for _ in range(docs)]
        f = tflow.tflow()
        f.request.method = "POST"
        f.request.host = "api.cohere.com"
        f.request.path = "/v2/rerank"
        f.request.content = json.dumps(
            {"model": "rerank-v3.5", "query": f"refund {i}", "documents": documents}
        ).encode()
        order = sorted(range(docs), key=lambda _: rng.random())
        state = meta.state_of(f)
        state.claims, state.operation, state.decision, state.token_sha256 = claims, "rerank", Decision.ALLOWED, "0" * 64
        f.response = tflow.tresp()
        f.response.content = json.dumps(
            {"id": str(i), "results": [{"index": j, "relevance_score": rng.random()} for j in order]}
        ).encode()
        out.append(f)
    return out


def _baseline(flows: list[Any]) -> float:
    """Flows per second through mitmproxy's FlowWriter into a file (no fsync, no upload).

    The jitgate state is beside the flow, not in its metadata, so the writer does not see it
    (which only makes the baseline cheaper)."""
    with tempfile.TemporaryFile() as fh:
        writer = mio.FlowWriter(fh)
        t0 = time.perf_counter()
        for f in flows:
            writer.add(f)
        fh.flush()
        return len(flows) / (time.perf_counter() - t0)


async def _record(flows: list[Any], spool_dir: Path, concurrency: int) -> dict[str, Any]:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="bench-audit")
    rec = SessionRecorder(s3=s3)
    with taddons.context(rec) as tctx:
        tctx.configure(rec, jitgate_spool_dir=str(spool_dir), jitgate_bucket="bench-audit", jitgate_gateway_id="bench")
        responses = [f.response for f in flows]
        t0 = time.perf_counter()
        for start in range(0, len(flows), concurrency):
            batch = flows[start : start + concurrency]
            for f in batch:
                f.response = None
                rec.request(f)
            for f, r in zip(batch, responses[start : start + concurrency], strict=True):
                f.response = r
            await asyncio.gather(*(rec.response(f) for f in batch))
        elapsed = time.perf_counter() - t0
        assert rec.spool is not None and rec.uploader is not None
        spool, uploader = rec.spool, rec.uploader
        rec.done()  # closes the open segment and ships what is left
        records, fsyncs = spool.records, spool.fsyncs
    objects = s3.list_objects_v2(Bucket="bench-audit", Prefix="sessions/").get("Contents", [])
    raw = 0
    lines = spool_dir.parent / "all.jsonl"
    with lines.open("wb") as out:
        for obj in objects:
            body = gzip.decompress(s3.get_object(Bucket="bench-audit", Key=obj["Key"])["Body"].read())
            raw += len(body)
            out.write(body)
    return {
        "records": records,
        "records_per_s": round(len(flows) / elapsed, 1),
        "s3_puts": uploader.puts,
        "s3_objects": len(objects),
        "s3_bytes": uploader.bytes_shipped,
        "record_bytes": raw,
        "fsyncs": fsyncs,
        "write_failures": rec.write_failures,
        "parquet_bytes": _parquet_bytes(lines),
    }


def _parquet_bytes(lines: Path) -> int:
    """The same records as one zstd Parquet file (the alternative format the issue allows)."""
    import duckdb

    from jitgate.records import duckdb_columns

    cols = "{" + ", ".join(f"'{k}': '{v}'" for k, v in duckdb_columns().items()) + "}"
    out = lines.with_suffix(".parquet")
    duckdb.connect().execute(
        f"COPY (SELECT * FROM read_json('{lines}', format = 'newline_delimited', columns = {cols})) "
        f"TO '{out}' (FORMAT parquet, COMPRESSION zstd)"
    )
    return out.stat().st_size


def _gateway_latency(requests: int, docs: int) -> dict[str, float]:
    """Latency through real mitmdump with the recorder and without it, requests interleaved."""
    import secrets
    import statistics

    from jitgate.devstack.upstream import Upstream
    from tests.e2e.recorder_gateway import REPO, Gateway

    key = secrets.token_urlsafe(16)
    rng = random.Random(2)
    documents = [" ".join(rng.choices(WORDS, k=40)) for _ in range(docs)]
    with tempfile.TemporaryDirectory() as tmp, Upstream(api_keys=[key], record=False) as up:
        ca = Path(tmp) / "ca.pem"
        ca.write_bytes(up.ca_pem())
        gateways = {}
        for name, env in (("with", {}), ("without", {"JITGATE_TEST_NO_RECORDER": "1"})):
            opts = {"ssl_verify_upstream_trusted_ca": str(ca), "jitgate_spool_dir": str(Path(tmp) / f"spool-{name}")}
            gateways[name] = Gateway([REPO / "tests/e2e/recorder_meta.py"], opts, confdir=Path(tmp) / name, env=env)
        times: dict[str, list[float]] = {"with": [], "without": []}
        try:
            clients = {n: g.start().client() for n, g in gateways.items()}
            body = {"model": "rerank-v3.5", "query": "refund policy", "documents": documents}
            headers = {"Authorization": f"Bearer {key}", "X-Test-Sub": "bench", "X-Test-Jti": "bench-jti-0001"}
            for i in range(requests + 20):
                for name in ("with", "without") if i % 2 else ("without", "with"):
                    t0 = time.perf_counter()
                    resp = clients[name].post(f"{up.url}/v2/rerank", json=body, headers=headers)
                    elapsed = (time.perf_counter() - t0) * 1000
                    assert resp.status_code == 200, resp.text
                    if i >= 20:  # warm-up: TLS sessions, connection pools
                        times[name].append(elapsed)
            for c in clients.values():
                c.close()
        finally:
            for g in gateways.values():
                g.stop()

    def pct(xs: list[float], q: float) -> float:
        return round(statistics.quantiles(xs, n=100)[int(q) - 1], 2)

    return {
        "gateway_requests": requests,
        "gateway_p50_ms_with_recorder": pct(times["with"], 50),
        "gateway_p50_ms_without_recorder": pct(times["without"], 50),
        "gateway_p99_ms_with_recorder": pct(times["with"], 99),
        "gateway_p99_ms_without_recorder": pct(times["without"], 99),
        "gateway_p50_ms_added": round(pct(times["with"], 50) - pct(times["without"], 50), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object (the default output)")
    ap.add_argument("--flows", type=int, default=10_000)
    ap.add_argument("--docs", type=int, default=20, help="documents per rerank call")
    ap.add_argument("--concurrency", type=int, default=64, help="flows in flight at once")
    ap.add_argument(
        "--gateway-requests", type=int, default=300, help="requests through real mitmdump per variant (0: skip)"
    )
    args = ap.parse_args()
    flows = _flows(args.flows, args.docs)
    request_bytes = sum(len(f.request.raw_content) + len(f.response.raw_content) for f in flows) / len(flows)
    baseline = _baseline(flows)
    with mock_aws(), tempfile.TemporaryDirectory() as tmp:
        got = asyncio.run(_record(flows, Path(tmp) / "spool", args.concurrency))
    n = args.flows
    result = {
        "benchmark": "recorder",
        "flows": n,
        "docs_per_call": args.docs,
        "concurrency": args.concurrency,
        "records_per_s": got["records_per_s"],
        "baseline_flowwriter_per_s": round(baseline, 1),
        "ratio_to_baseline": round(got["records_per_s"] / baseline, 3),
        "s3_puts_per_10k_flows": round(got["s3_puts"] * 10_000 / n, 2),
        "record_bytes_per_flow": round(got["record_bytes"] / n, 1),
        "s3_bytes_per_flow": round(got["s3_bytes"] / n, 1),
        "parquet_zstd_bytes_per_flow": round(got["parquet_bytes"] / n, 1),
        "payload_bytes_per_flow": round(request_bytes, 1),
        "records_written": got["records"],
        "fsyncs": got["fsyncs"],
        "write_failures": got["write_failures"],
        "cpus": os.cpu_count(),
    }
    if args.gateway_requests:
        result |= _gateway_latency(args.gateway_requests, args.docs)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
