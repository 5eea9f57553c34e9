"""1 vs 2 jitgate workers on one port (SO_REUSEPORT), with the CPU every process used.

The load of gateway_overhead.py (Cohere v2 rerank POSTs of 100 x 1 kB documents, 8 keep-alive
clients) alternates round by round between one worker and two workers sharing one listen port,
each started as `jitgate gateway --workers N` starts them (`python -m addon.worker`, the whole
chain, its own gateway id and spool, one shared confdir so both present the same CA). Per setup:
rps, each worker's CPU ms per request (of all requests: the two add up to the fleet's), the
upstream's and the load generator's (this process's threads) CPU ms per request, and the cores
all of them used. On a 2-core host the load generator and the upstream share the cores with the
workers, so `scaling_2_vs_1` is bounded by 2 cores / (gateway + upstream + load generator CPU per
request) rather than by 2.

Run: .venv/bin/python benchmarks/worker_scaling.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from jitgate.devstack.gateway import Gateway, launch, mitmdump_argv

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import bench_stack, cpu_seconds, documents, rerank_body
from gateway_overhead import _load

IDLE_SECONDS = 5.0


def _children(pid: int) -> dict[int, str]:
    """This process's child processes and their command lines."""
    found: dict[int, str] = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            kids = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except OSError:
            continue
        for kid in kids:
            try:
                found[int(kid)] = Path(f"/proc/{kid}/cmdline").read_text().replace("\0", " ")
            except OSError:
                continue
    return found


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    docs = documents(100, 1024, random.Random(7))
    body = rerank_body(docs)
    real_key = "bench-" + secrets.token_urlsafe(24)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="jitgate-workers-") as tmp:
        work = Path(tmp)
        env = stack.enter_context(bench_stack(work, real_key, {"max_documents": 1000, "max_bytes": 4 * 1024 * 1024}))
        upstream = [pid for pid, cmd in _children(os.getpid()).items() if "devstack.upstream" in cmd]

        def worker(name: str, confdir: Path, port: int) -> Gateway:
            confdir.mkdir(exist_ok=True)
            options = {
                **env.jitgate_options, "confdir": str(confdir), "jitgate_bucket": env.aws.bucket,
                "jitgate_gateway_id": name, "jitgate_reuse_port": "true", "jitgate_spool_dir": str(work / name),
            }
            argv = mitmdump_argv(listen_host="127.0.0.1", listen_port=port, options=options)
            return stack.enter_context(launch([sys.executable, "-m", "addon.worker", *argv[1:]], confdir=confdir))

        solo = worker("solo", work / "solo-ca", 0)
        first = worker("w0", work / "fleet-ca", 0)
        fleet = [first, worker("w1", work / "fleet-ca", int(first.url.rsplit(":", 1)[1].strip("/")))]
        setups = {"workers_1": [solo], "workers_2": fleet}
        # What a worker burns with no traffic (revocation pulls, metrics tick, uploader): a cost per
        # second, so per request it doubles with two workers at the same rate.
        pids = [g.proc.pid for g in (solo, *fleet)]
        idle0 = [cpu_seconds(pid) for pid in pids]
        time.sleep(IDLE_SECONDS)
        idle = [(cpu_seconds(pid) - a) * 1000 / IDLE_SECONDS for pid, a in zip(pids, idle0, strict=True)]
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in setups}
        per = args.requests + args.warmup
        for _ in range(args.rounds):
            for name, gws in setups.items():
                how = {
                    "headers": {"Content-Type": "application/json", "Authorization": "Bearer placeholder"},
                    "proxy": gws[0].proxy_url(env.token), "verify": gws[0].client_bundle(work / f"{name}.pem"),
                }
                g0 = [cpu_seconds(g.proc.pid) for g in gws]
                u0, s0 = sum(cpu_seconds(p) for p in upstream), _own_cpu()
                _, wall = _load(
                    f"{env.upstream_url}/v2/rerank", body, **how, requests=args.requests,
                    concurrency=args.concurrency, warmup=args.warmup,
                )
                g1 = [cpu_seconds(g.proc.pid) for g in gws]
                u1, s1 = sum(cpu_seconds(p) for p in upstream), _own_cpu()
                rps = args.requests / wall
                each = [(b - a) * 1000 / per for a, b in zip(g0, g1, strict=True)]
                up, gen = (u1 - u0) * 1000 / per, (s1 - s0) * 1000 / per
                rounds[name].append({
                    "rps": round(rps, 1),
                    "gateway_cpu_ms_per_req_each": [round(x, 3) for x in each],
                    "upstream_cpu_ms_per_req": round(up, 3),
                    "loadgen_cpu_ms_per_req": round(gen, 3),
                    "cores_used": round((sum(each) + up + gen) * rps / 1000, 2),
                })
    result: dict[str, Any] = {"requests": args.requests, "rounds": args.rounds, "cpus": os.cpu_count()}
    result["idle_cpu_ms_per_s_each_worker"] = [round(x, 2) for x in idle]
    for name, runs in rounds.items():
        result[f"rps_{name}"] = round(statistics.median(r["rps"] for r in runs), 1)
        result[f"gateway_cpu_ms_per_req_{name}"] = round(
            statistics.median(sum(r["gateway_cpu_ms_per_req_each"]) for r in runs), 3
        )
        result[f"{name}_by_round"] = runs
    result["scaling_2_vs_1"] = round(result["rps_workers_2"] / result["rps_workers_1"], 3)
    result["load_average"] = os.getloadavg()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
