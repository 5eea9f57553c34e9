"""Gateway overhead: the same keep-alive rerank load direct, through a bare mitmdump, and through jitgate.

All three are measured in one run on this machine, so the ratios compare like with like:
rerank POSTs of `--docs` documents x `--doc-bytes` bytes, `--concurrency` keep-alive clients,
`--requests` requests each (after a warm-up). The upstream (jitgate.devstack.upstream) runs in a
child process with a private CA; the jitgate gateway gets its token from the real broker (local
adapter) backed by a moto server. Prints one JSON object (`--json`) with rps, p50 and p99 per path,
`ratio_vs_bare` and `p50_added_ms_vs_bare` (pooled over the rounds), and the same two per round
(`ratio_vs_bare_by_round`, `p50_added_ms_by_round`), so the drift within one run can be read.
The token carries no `max_requests` unless `--count-requests`, so the hot path makes no DynamoDB
call (the figures say which). The jitgate gateway ships its session records to the moto S3
bucket as deployed (gzip included) unless `--no-ship`, which leaves them in the spool as the
benchmark did before 2026-11-23 night.
The jitgate gateway runs mitmproxy's event dispatch through addon/hook_dispatch.py, which a bare
mitmdump does not; `--dispatch` adds a bare mitmdump with only that (`bare_dispatch_*`), so the
chain's own cost can be read like for like (`ratio_vs_bare_dispatch`).
`--baseline-tree DIR` adds the full jitgate chain of another checkout (e.g. main before a
refactor), run by the same mitmdump with that tree first on PYTHONPATH, in the same rounds:
`baseline_*` and `cpu_ratio_vs_baseline` (this tree's gateway CPU per request / the other's).

Issue 22's figures, in the same run: `cpu_ratio_vs_bare` (jitgate's gateway CPU per request / bare
mitmdump's); an open-loop phase (`--openloop-requests` arriving at a fixed Poisson rate, by default
half of bare mitmdump's closed-loop rps, against bare and jitgate in turn with the same arrivals:
`openloop_p50_added_ms`, `openloop_p99_added_ms`, latency counted from each request's scheduled
arrival); and LiteLLM's proxy as a peer on the same load (benchmarks/peer_litellm.py installs it
into a venv of its own; `--no-litellm` skips it): `litellm_rps`, `ratio_vs_litellm`.

Run: .venv/bin/python benchmarks/gateway_overhead.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import boto3

from jitgate.devstack.gateway import start_gateway

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import bench_stack, drive, drive_open, rerank_body, summary
from _load import cpu_seconds as _cpu_seconds
from _load import documents as _documents
from peer_litellm import PeerUnavailable, litellm_proxy

TARGETS = {
    "cpu_ratio_vs_bare": ("<=", 1.15),
    "openloop_p50_added_ms": ("<=", 1.0),
    "openloop_p99_added_ms": ("<=", 5.0),
    "ratio_vs_litellm": (">=", 2.0),
    "ratio_vs_bare": (">=", 0.85),
}

# The data-path core alone (this benchmark's subject): token_gate, scope_guard, credential_inject.
CORE_CHAIN = """
from addon.credential_inject import CredentialInject
from addon.scope_guard import ScopeGuard
from addon.token_gate import TokenGate

addons = [TokenGate(), ScopeGuard(), CredentialInject()]
"""
# Diagnostic baseline (--noop): a `-s` script whose hooks do nothing, to tell mitmproxy's cost of
# running any script addon from the core's own. It refuses the readiness probe like jitgate does.
NOOP_CHAIN = """
from mitmproxy import http


class Noop:
    def http_connect(self, flow):
        if flow.request.host.endswith(".invalid"):
            flow.response = http.Response.make(403)

    async def request(self, flow):
        return None

    def response(self, flow):
        return None


addons = [Noop()]
"""
# Diagnostic baseline (--dispatch): a bare mitmdump with jitgate's hook dispatch and no addon of its own.
DISPATCH_ONLY = """
from addon import hook_dispatch

if not hook_dispatch.install():
    raise RuntimeError("hook_dispatch did not install")
addons = []
"""


def _load(
    url: str, body: bytes, headers: dict[str, str], *, proxy: str | None, verify: Path, requests: int, concurrency: int,
    warmup: int, path_url: str | None = None,
) -> tuple[list[float], float]:
    """`drive` with one body; any failed request fails the benchmark. (latencies, wall seconds)."""
    url = path_url or url
    run = drive(
        url, lambda _i: body, headers, proxy=proxy, verify=verify, requests=requests, concurrency=concurrency,
        warmup=warmup,
    )
    if run.errors:
        raise RuntimeError(f"{len(run.errors)} failed requests, first: {run.errors[0]}")
    return run.latencies, run.wall


def _summary(runs: list[tuple[list[float], float]]) -> dict[str, float]:
    """`summary` over the rounds of one path."""
    return summary([x for lat, _ in runs for x in lat], sum(w for _, w in runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--doc-bytes", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3, help="alternate the three paths this many times")
    parser.add_argument("--noop", action="store_true", help="add a no-op `-s` script as a diagnostic baseline")
    parser.add_argument("--count-requests", action="store_true", help="give the token max_requests (DynamoDB counter)")
    parser.add_argument("--no-ship", action="store_true", help="keep session records in the spool (no S3 upload)")
    parser.add_argument(
        "--dispatch", action="store_true", help="add a bare mitmdump with only jitgate's hook dispatch (like for like)"
    )
    parser.add_argument("--openloop-requests", type=int, default=1500, help="requests per open-loop round")
    parser.add_argument(
        "--openloop-rate", type=float, default=0.0, help="open-loop arrivals per second (default: half of bare's rps)"
    )
    parser.add_argument("--no-litellm", action="store_true", help="leave LiteLLM's proxy (the peer) out")
    parser.add_argument(
        "--baseline-tree", type=Path, default=None,
        help="another checkout whose full chain runs beside this one's (before/after in one run)",
    )
    args = parser.parse_args()

    rng = random.Random(7)
    docs = _documents(args.docs, args.doc_bytes, rng)
    body = rerank_body(docs)
    real_key = "bench-" + secrets.token_urlsafe(24)

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="jitgate-bench-") as tmp:
        work = Path(tmp)
        limits = {"max_documents": 1000, "max_bytes": 4 * 1024 * 1024}
        if args.count_requests:
            limits["max_requests"] = 10 * (args.requests + args.warmup)
        env = stack.enter_context(bench_stack(work, real_key, limits))
        up_url, up_ca, token, jit_opts = env.upstream_url, env.upstream_ca, env.token, env.jitgate_options
        # As deployed, the full chain's recorder gzips closed segments and puts them to the bucket.
        full_opts = jit_opts if args.no_ship else {**jit_opts, "jitgate_bucket": env.aws.bucket}
        bare = stack.enter_context(start_gateway(work / "bare", options=env.bare_options, script=None))
        jit = stack.enter_context(start_gateway(work / "jit", options=full_opts))
        core_script = work / "core_chain.py"
        core_script.write_text(CORE_CHAIN)
        core = stack.enter_context(start_gateway(work / "core", options=jit_opts, script=core_script))
        noop = None
        if args.noop:
            noop_script = work / "noop_chain.py"
            noop_script.write_text(NOOP_CHAIN)
            noop = stack.enter_context(start_gateway(work / "noop", options=env.bare_options, script=noop_script))

        baseline = None
        if args.baseline_tree is not None:
            tree = args.baseline_tree.resolve()
            baseline = stack.enter_context(
                start_gateway(
                    work / "baseline", options=full_opts, script=tree / "addon" / "jitgate_addons.py",
                    env={**os.environ, "PYTHONPATH": str(tree)},
                )
            )

        dispatch = None
        if args.dispatch:  # a `-s` script that refuses nothing: readiness is probed as for bare
            dispatch_script = work / "dispatch_only.py"
            dispatch_script.write_text(DISPATCH_ONLY)
            dispatch = stack.enter_context(
                start_gateway(
                    work / "dispatch", options=env.bare_options, script=None, extra_args=["-s", str(dispatch_script)]
                )
            )

        peer, peer_error = None, None
        if not args.no_litellm:
            try:
                peer = stack.enter_context(litellm_proxy(work, up_url, up_ca, real_key))
            except PeerUnavailable as exc:
                peer_error = str(exc)

        url = f"{up_url}/v2/rerank"
        common: dict[str, Any] = {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "warmup": args.warmup,
        }
        ct = {"Content-Type": "application/json"}
        real_auth = {**ct, "Authorization": f"Bearer {real_key}"}
        paths: dict[str, dict[str, Any]] = {
            "direct": {"headers": real_auth, "proxy": None, "verify": up_ca},
            "bare": {"headers": real_auth, "proxy": bare.url, "verify": bare.client_bundle(work / "bare.pem")},
            "jitgate": {
                "headers": {**ct, "Authorization": "Bearer placeholder"},
                "proxy": jit.proxy_url(token),
                "verify": jit.client_bundle(work / "jit.pem"),
            },
            "core": {
                "headers": {**ct, "Authorization": "Bearer placeholder"},
                "proxy": core.proxy_url(token),
                "verify": core.client_bundle(work / "core.pem"),
            },
        }
        pids = {"bare": bare.proc.pid, "jitgate": jit.proc.pid, "core": core.proc.pid}
        if noop is not None:
            paths["noop"] = {"headers": real_auth, "proxy": noop.url, "verify": noop.client_bundle(work / "noop.pem")}
            pids["noop"] = noop.proc.pid
        if baseline is not None:
            paths["baseline"] = {
                "headers": {**ct, "Authorization": "Bearer placeholder"},
                "proxy": baseline.proxy_url(token),
                "verify": baseline.client_bundle(work / "baseline.pem"),
            }
            pids["baseline"] = baseline.proc.pid
        if dispatch is not None:
            paths["bare_dispatch"] = {
                "headers": real_auth, "proxy": dispatch.url, "verify": dispatch.client_bundle(work / "dispatch.pem"),
            }
            pids["bare_dispatch"] = dispatch.proc.pid
        if peer is not None:
            paths["litellm"] = {
                "headers": {**ct, "Authorization": f"Bearer {peer.master_key}"},
                "proxy": None,
                "verify": up_ca,
                "path_url": f"{peer.url}/v2/rerank",
            }
            pids["litellm"] = peer.pid
        runs: dict[str, list[tuple[list[float], float]]] = {name: [] for name in paths}
        cpu = dict.fromkeys(pids, 0.0)
        # Alternating rounds: drift in a shared machine's load hits all three paths alike.
        for _ in range(args.rounds):
            for name, how in paths.items():
                before = _cpu_seconds(pids[name]) if name in pids else 0.0
                try:
                    runs[name].append(_load(url, body, **how, **common))
                    if name in pids:
                        cpu[name] += _cpu_seconds(pids[name]) - before
                except RuntimeError:
                    gws = {"bare": bare, "jitgate": jit, "core": core, "noop": noop, "bare_dispatch": dispatch,
                           "baseline": baseline}
                    gw = gws.get(name)
                    if gw is not None:
                        print("\n".join(list(gw.log)[-30:]), file=sys.stderr)
                    raise
        direct, bare_r, jit_r, core_r = (_summary(runs[name]) for name in ("direct", "bare", "jitgate", "core"))
        # Open loop: the same Poisson arrivals (one seed per round) to bare mitmdump and jitgate.
        rate = args.openloop_rate or round(bare_r["rps"] / 2, 1)
        open_runs: dict[str, list[list[float]]] = {"bare": [], "jitgate": []}
        for r in range(args.rounds):
            for name in open_runs:
                how = paths[name]
                run = drive_open(
                    url, body, how["headers"], proxy=how["proxy"], verify=how["verify"], rate=rate,
                    requests=args.openloop_requests, seed=1000 + r,
                )
                if run.errors:
                    raise RuntimeError(f"open loop {name}: {len(run.errors)} failed requests, first: {run.errors[0]}")
                open_runs[name].append(run.latencies)
        shipped = 0
        if not args.no_ship:  # the segments the jitgate gateway put to S3 during the run
            s3 = boto3.client("s3", endpoint_url=env.aws_endpoint, region_name=env.aws.region)
            shipped = s3.list_objects_v2(Bucket=env.aws.bucket, Prefix="sessions/").get("KeyCount", 0)

    per_req = (args.requests + args.warmup) * args.rounds  # every request a gateway's CPU was read over
    result = {
        "requests": args.requests * args.rounds,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "documents": args.docs,
        "body_bytes": len(body),
        "request_counter": args.count_requests,
        "ships_records": not args.no_ship,
        "segments_shipped": shipped,
        "direct_rps": direct["rps"],
        "bare_rps": bare_r["rps"],
        "jitgate_rps": jit_r["rps"],
        "ratio_vs_bare": round(jit_r["rps"] / bare_r["rps"], 3),
        "direct_p50_ms": direct["p50_ms"],
        "direct_p99_ms": direct["p99_ms"],
        "bare_p50_ms": bare_r["p50_ms"],
        "bare_p99_ms": bare_r["p99_ms"],
        "jitgate_p50_ms": jit_r["p50_ms"],
        "jitgate_p99_ms": jit_r["p99_ms"],
        "p50_added_ms_vs_bare": round(jit_r["p50_ms"] - bare_r["p50_ms"], 3),
        # The same figures for the data-path core alone (no approval_hold, leak_guard, session_recorder).
        "core_rps": core_r["rps"],
        "core_ratio_vs_bare": round(core_r["rps"] / bare_r["rps"], 3),
        "core_p50_ms": core_r["p50_ms"],
        "core_p99_ms": core_r["p99_ms"],
        "core_p50_added_ms_vs_bare": round(core_r["p50_ms"] - bare_r["p50_ms"], 3),
        # Gateway process CPU per request: steadier than rps on a shared machine.
        "bare_cpu_ms_per_req": round(cpu["bare"] * 1000 / per_req, 3),
        "jitgate_cpu_ms_per_req": round(cpu["jitgate"] * 1000 / per_req, 3),
        "core_cpu_ms_per_req": round(cpu["core"] * 1000 / per_req, 3),
        "cpu_ratio_vs_bare": round(cpu["jitgate"] / cpu["bare"], 3),
        "cpus": os.cpu_count(),
    }
    ob = summary([x for lat in open_runs["bare"] for x in lat], 1.0)
    oj = summary([x for lat in open_runs["jitgate"] for x in lat], 1.0)
    result.update(
        openloop_rate_rps=rate,
        openloop_requests=args.openloop_requests * args.rounds,
        openloop_bare_p50_ms=ob["p50_ms"],
        openloop_bare_p99_ms=ob["p99_ms"],
        openloop_jitgate_p50_ms=oj["p50_ms"],
        openloop_jitgate_p99_ms=oj["p99_ms"],
        openloop_p50_added_ms=round(oj["p50_ms"] - ob["p50_ms"], 3),
        openloop_p99_added_ms=round(oj["p99_ms"] - ob["p99_ms"], 3),
        openloop_p50_added_ms_by_round=[
            round(summary(j, 1.0)["p50_ms"] - summary(b, 1.0)["p50_ms"], 3)
            for j, b in zip(open_runs["jitgate"], open_runs["bare"], strict=True)
        ],
    )
    if "litellm" in runs:
        lit = _summary(runs["litellm"])
        result.update(
            litellm_version=peer.version if peer else None,
            litellm_rps=lit["rps"],
            litellm_p50_ms=lit["p50_ms"],
            litellm_p99_ms=lit["p99_ms"],
            litellm_cpu_ms_per_req=round(cpu["litellm"] * 1000 / per_req, 3),
            ratio_vs_litellm=round(jit_r["rps"] / lit["rps"], 3),
        )
    else:
        result.update(litellm_error=peer_error or "skipped (--no-litellm)")
    # Each round's jitgate against the same round's bare: how far the pooled figures above moved
    # within this run (a shared machine's drift shows up here as one round far from the others).
    by_round = [
        (summary(*runs["jitgate"][i]), summary(*runs["bare"][i])) for i in range(args.rounds)
    ]
    result.update(
        ratio_vs_bare_by_round=[round(j["rps"] / b["rps"], 3) for j, b in by_round],
        p50_added_ms_by_round=[round(j["p50_ms"] - b["p50_ms"], 3) for j, b in by_round],
    )
    if args.noop:
        noop_r = _summary(runs["noop"])
        result.update(noop_rps=noop_r["rps"], noop_cpu_ms_per_req=round(cpu["noop"] * 1000 / per_req, 3))
    if baseline is not None:
        base_r = _summary(runs["baseline"])
        base_cpu = cpu["baseline"] * 1000 / per_req
        result.update(
            baseline_tree=str(args.baseline_tree),
            baseline_rps=base_r["rps"],
            baseline_p50_ms=base_r["p50_ms"],
            baseline_cpu_ms_per_req=round(base_cpu, 3),
            ratio_vs_baseline=round(jit_r["rps"] / base_r["rps"], 3),
            cpu_ratio_vs_baseline=round(cpu["jitgate"] * 1000 / per_req / base_cpu, 3),
        )
    if args.dispatch:
        disp_r = _summary(runs["bare_dispatch"])
        result.update(
            bare_dispatch_rps=disp_r["rps"],
            bare_dispatch_p50_ms=disp_r["p50_ms"],
            bare_dispatch_cpu_ms_per_req=round(cpu["bare_dispatch"] * 1000 / per_req, 3),
            ratio_vs_bare_dispatch=round(jit_r["rps"] / disp_r["rps"], 3),
            p50_added_ms_vs_bare_dispatch=round(jit_r["p50_ms"] - disp_r["p50_ms"], 3),
        )
    checks = {k: (result[k] <= v if op == "<=" else result[k] >= v) for k, (op, v) in TARGETS.items() if k in result}
    result.update(targets={k: f"{op} {v}" for k, (op, v) in TARGETS.items()}, meets_targets=checks)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
