"""Proof under load: rerank requests through the full jitgate gateway and through a bare mitmdump.

The same keep-alive load (`--requests` rerank POSTs at `--concurrency`, default 10,000 at 32)
goes through a bare `mitmdump` and through `mitmdump -s addon/jitgate_addons.py` with every addon
on (token_gate, scope_guard with a DynamoDB request counter, leak_guard, approval_hold,
credential_inject, session_recorder shipping to S3), in alternating rounds of one run. The
token comes from the real broker (local adapter) on a moto server. Every request carries a unique
marker in its query, so the check "records in S3 == requests" is exact: each marker sent through
jitgate must be found in exactly one shipped session record.

Prints one JSON object (`--json`): unexpected errors per path, records in S3 vs requests sent,
p50/p99/rps per path and the jitgate/bare ratios.

Run: .venv/bin/python benchmarks/load.py --json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import secrets
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import boto3

from jitgate.devstack.gateway import start_gateway

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import Run, bench_stack, cpu_seconds, documents, drive, summary

GATEWAY_ID = "load"


def _shipped_markers(s3: Any, bucket: str) -> tuple[list[str], int]:
    """Markers of every shipped session record of this gateway, and how many records had none."""
    markers: list[str] = []
    without = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="sessions/"):
        for obj in page.get("Contents", []):
            if f"/{GATEWAY_ID}-" not in obj["Key"]:
                continue
            for line in gzip.decompress(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()).splitlines():
                record = json.loads(line)
                if str(record.get("host", "")).endswith(".invalid"):
                    continue  # the start-up readiness probe (a refused CONNECT), not load
                query = record.get("rerank_query") or ""
                if query.startswith("mk"):
                    markers.append(query.split()[0])
                else:
                    without += 1
    return markers, without


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--requests", type=int, default=10_000, help="measured requests per path")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured requests per path and round")
    parser.add_argument("--rounds", type=int, default=2, help="alternate bare and jitgate this many times")
    parser.add_argument("--docs", type=int, default=20)
    parser.add_argument("--doc-bytes", type=int, default=512)
    parser.add_argument("--ship-timeout", type=float, default=120.0, help="seconds to wait for every record in S3")
    args = parser.parse_args()

    rng = random.Random(8)
    docs = documents(args.docs, args.doc_bytes, rng)
    words = docs[3].split()[:4]
    real_key = "load-" + secrets.token_urlsafe(24)
    per_round = max(1, args.requests // args.rounds)
    sent_through_jitgate = (per_round + args.warmup) * args.rounds

    def body_for(prefix: str) -> Any:
        def body(i: int) -> bytes:
            query = f"mk{prefix}{i:06d} " + " ".join(words)
            return json.dumps({"model": "rerank-v3.5", "query": query, "documents": docs}).encode()

        return body

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="jitgate-load-") as tmp:
        work = Path(tmp)
        # A request budget the run cannot use up: the shared DynamoDB counter is on the path.
        limits = {"max_requests": 4 * sent_through_jitgate, "max_documents": 1000, "max_bytes": 4 << 20}
        env = stack.enter_context(bench_stack(work, real_key, limits, ttl="30m"))
        up_url, token, aws = env.upstream_url, env.token, env.aws
        bare = stack.enter_context(start_gateway(work / "bare", options=env.bare_options, script=None))
        opts = dict(env.jitgate_options)
        opts.update(
            {
                "jitgate_issuer": env.broker_url,
                "jitgate_bucket": aws.bucket,
                "jitgate_spool_dir": str(work / "spool"),
                "jitgate_gateway_id": GATEWAY_ID,
                "jitgate_segment_ms": "2000",
            }
        )
        jit = stack.enter_context(start_gateway(work / "jit", options=opts))

        url = f"{up_url}/v2/rerank"
        ct = {"Content-Type": "application/json"}
        paths: dict[str, dict[str, Any]] = {
            "bare": {
                "headers": {**ct, "Authorization": f"Bearer {real_key}"},
                "proxy": bare.url,
                "verify": bare.client_bundle(work / "bare.pem"),
            },
            "jitgate": {
                "headers": {**ct, "Authorization": "Bearer placeholder"},
                "proxy": jit.proxy_url(token),
                "verify": jit.client_bundle(work / "jit.pem"),
            },
        }
        pids = {"bare": bare.proc.pid, "jitgate": jit.proc.pid}
        runs: dict[str, list[Run]] = {name: [] for name in paths}
        cpu = dict.fromkeys(paths, 0.0)
        for r in range(args.rounds):
            for name, how in paths.items():
                before = cpu_seconds(pids[name])
                runs[name].append(
                    drive(
                        url,
                        body_for(f"{name[0]}{r}"),
                        **how,
                        requests=per_round,
                        concurrency=args.concurrency,
                        warmup=args.warmup,
                    )
                )
                cpu[name] += cpu_seconds(pids[name]) - before

        # Every request through jitgate (warm-up included) must arrive in S3 as one record.
        expected = {f"mkj{r}{i:06d}" for r in range(args.rounds) for i in range(per_round + args.warmup)}
        s3 = boto3.client("s3", endpoint_url=env.aws_endpoint, region_name=aws.region)
        deadline = time.monotonic() + args.ship_timeout
        shipped, without = _shipped_markers(s3, aws.bucket)
        while set(shipped) != expected and time.monotonic() < deadline:
            time.sleep(1.0)
            shipped, without = _shipped_markers(s3, aws.bucket)
        alive = jit.proc.poll() is None

    result: dict[str, Any] = {
        "requests_per_path": per_round * args.rounds,
        "warmup_per_round": args.warmup,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "documents": args.docs,
        "doc_bytes": args.doc_bytes,
        "gateway_alive": alive,
    }
    for name in paths:
        lat = [x for run in runs[name] for x in run.latencies]
        errors = [e for run in runs[name] for e in run.errors]
        figures = summary(lat, sum(run.wall for run in runs[name]))
        result[f"{name}_sent"] = sum(run.sent for run in runs[name])
        result[f"{name}_unexpected_errors"] = len(errors)
        if errors:
            result[f"{name}_first_error"] = errors[0]
        result.update({f"{name}_{k}": v for k, v in figures.items()})
        result[f"{name}_cpu_ms_per_req"] = round(cpu[name] * 1000 / max(1, result[f"{name}_sent"]), 3)
    result.update(
        {
            "records_expected": len(expected),
            "records_in_s3": len(shipped),
            "records_distinct": len(set(shipped)),
            "records_without_marker": without,
            "records_match": set(shipped) == expected and len(shipped) == len(expected) and without == 0,
            "ratio_rps_vs_bare": round(result["jitgate_rps"] / result["bare_rps"], 3) if result["bare_rps"] else None,
            "p50_added_ms_vs_bare": round(result["jitgate_p50_ms"] - result["bare_p50_ms"], 3),
            "p99_added_ms_vs_bare": round(result["jitgate_p99_ms"] - result["bare_p99_ms"], 3),
            "cpus": os.cpu_count(),
        }
    )
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    if result["jitgate_unexpected_errors"] or result["bare_unexpected_errors"] or not result["records_match"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
