"""Store overhead: the same top-50 Chroma `query` load direct to a real Chroma server and through jitgate.

Both paths are measured in one run on this machine, alternating for `--rounds`, so the ratio
compares like with like: `--concurrency` keep-alive clients each POST Chroma v2 `query` bodies
(one embedding of dimension 8, `n_results` 50, include documents and distances) to the real
server (`chroma run`, `candidates` seeded with `--records` records). Through the gateway the token
is the chroma-dev reader's (fields ids, documents, distances; PII masked in the answers), sent as
`x-chroma-token` over HTTP_PROXY as chromadb does; the full addon chain runs and records every
flow to its spool. The token carries no `max_requests`, so the hot path makes no DynamoDB call.
Prints one JSON object (`--json`): `direct_qps`, `jitgate_qps`, `ratio_vs_direct`, p50/p99 for each,
`gateway_cpu_ms_per_request` (the gateway process's user+system CPU over the measured requests).

Run: .venv/bin/python benchmarks/store_overhead.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import yaml

from jitgate.devstack.aws import DEFAULT_REGION, FAKE_CREDENTIALS, local_broker, moto_server, seed
from jitgate.devstack.chroma import ChromaServer, collection_path, seed_candidates
from jitgate.devstack.gateway import jitgate_options, start_gateway
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import CHROMA_CONNECTION, READER_SUB, policy_dict
from jitgate.policy import parse_policy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import REPO, Run, drive, summary
from _load import cpu_seconds as _cpu_seconds


def _pooled(runs: list[Run]) -> dict[str, float]:
    latencies = [x for r in runs for x in r.latencies]
    return summary(latencies, sum(r.wall for r in runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--requests", type=int, default=600, help="measured queries per path and round")
    parser.add_argument("--warmup", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--records", type=int, default=2000, help="generated records besides the seed")
    parser.add_argument("--top", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    rng = random.Random(7)
    bodies = [
        json.dumps({"query_embeddings": [[rng.random() for _ in range(8)]], "n_results": args.top,
                    "include": ["documents", "distances"]}).encode()
        for _ in range(64)
    ]
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="jitgate-store-bench-") as tmp:
        work = Path(tmp)
        moto = stack.enter_context(moto_server())
        os.environ.update({"AWS_ENDPOINT_URL": moto.url, "AWS_DEFAULT_REGION": DEFAULT_REGION, **FAKE_CREDENTIALS})
        issuer = stack.enter_context(OidcIssuer())
        chroma = stack.enter_context(ChromaServer(work / "chroma"))
        col = seed_candidates(chroma.url, extra=args.records)
        doc: Any = policy_dict(issuer.url, upstreams={CHROMA_CONNECTION: chroma.url})
        for grant in doc["grants"]:
            if grant["name"] == "chroma-readers":
                grant["limits"] = {}  # no DynamoDB counter on the hot path
        policy_path = work / "policy.yaml"
        policy_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        policy = parse_policy(policy_path.read_text())
        fake = {c.credential.secret_id: f"bench-{c.name}" for c in policy.connections.values()}
        aws = seed(moto.url, policy=policy, secrets=fake)
        broker = stack.enter_context(local_broker(aws, policy_path, cwd=REPO))
        answer = httpx.post(
            f"{broker.url}/v1/tokens", json={"connection": CHROMA_CONNECTION},
            headers={"Authorization": f"Bearer {issuer.mint(READER_SUB)}"}, timeout=30,
        )
        answer.raise_for_status()
        token = answer.json()["token"]
        options = jitgate_options(policy=policy_path, jwks_url=f"{broker.url}/.well-known/jwks.json",
                                  table=aws.table, aws_endpoint=moto.url, region=aws.region)
        jit = stack.enter_context(start_gateway(work / "jit", options=options))

        url = f"{chroma.url}{collection_path()}/{col['id']}/query"
        ct = {"Content-Type": "application/json"}
        paths: dict[str, dict[str, Any]] = {
            "direct": {"headers": ct, "proxy": None},
            "jitgate": {"headers": {**ct, "x-chroma-token": token}, "proxy": jit.url},
        }
        runs: dict[str, list[Run]] = {name: [] for name in paths}
        cpu = 0.0
        errors: dict[str, list[str]] = {name: [] for name in paths}
        for _ in range(args.rounds):
            for name, p in paths.items():
                before = _cpu_seconds(jit.proc.pid)
                run = drive(url, lambda i: bodies[i % len(bodies)], p["headers"], proxy=p["proxy"],
                            verify=jit.confdir / "mitmproxy-ca-cert.pem", requests=args.requests,
                            concurrency=args.concurrency, warmup=args.warmup)
                if name == "jitgate":
                    cpu += _cpu_seconds(jit.proc.pid) - before
                runs[name].append(run)
                errors[name] += run.errors[:3]
        direct, through = _pooled(runs["direct"]), _pooled(runs["jitgate"])
        measured = sum(len(r.latencies) for r in runs["jitgate"])
        sent = sum(r.sent for r in runs["jitgate"])
        result = {
            "benchmark": "store_overhead",
            "store": "chroma run (chromadb 1.5.9), loopback, plain HTTP",
            "query": {"n_results": args.top, "include": ["documents", "distances"], "dimension": 8,
                      "records": args.records + 8},
            "concurrency": args.concurrency,
            "requests_per_path": args.requests * args.rounds,
            "rounds": args.rounds,
            "direct_qps": direct["rps"],
            "jitgate_qps": through["rps"],
            "ratio_vs_direct": round(through["rps"] / direct["rps"], 3) if direct["rps"] else None,
            "direct_p50_ms": direct["p50_ms"],
            "direct_p99_ms": direct["p99_ms"],
            "jitgate_p50_ms": through["p50_ms"],
            "jitgate_p99_ms": through["p99_ms"],
            "gateway_cpu_ms_per_request": round(cpu * 1000 / sent, 3) if sent else None,
            "measured": {"direct": sum(len(r.latencies) for r in runs["direct"]), "jitgate": measured},
            "errors": {k: v for k, v in errors.items() if v},
            "cpus": os.cpu_count(),
        }
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
