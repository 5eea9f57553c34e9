"""Gateway CPU per request for chosen addon chains, and for the same chain from two code trees.

The tool behind the full-chain tuning in docs/performance.md. `gateway_overhead.py` answers
"how far is the shipped gateway from bare mitmdump"; this one answers "what does this addon cost"
and "did this change help", on a shared machine where separate runs differ by more than most
changes: every gateway runs in the same process tree with the same upstream, broker and token, the
load (the same as gateway_overhead.py) alternates between them round by round, and each gateway's
own CPU time per request is read from /proc.

Chains: `core` (token_gate, scope_guard, credential_inject), `leak`, `rec`, `hold` (the core plus
leak_guard, session_recorder or approval_hold), `full` (those six in the shipped order; without
upstream_timeout and gc_freeze, so older trees run too), `ship` (the tree's addon/jitgate_addons.py
as it is), `noop` (six hook-only addons: what mitmproxy's dispatch costs), `offload` (the core plus
benchmarks/offload_standin.py: inspection and recording moved to a worker process, as the event
loop would see it). `NAME@TREE` runs a chain from another code tree: a folder holding `addon/` and
`jitgate/`, e.g. a commit extracted with
`git archive <commit> addon jitgate | tar -x -C /tmp/base`.

`--hooks` adds each chain's CPU per flow of every addon hook, measured inside the gateway (the
main thread's CPU clock around each hook): where the chain's cost over bare mitmdump goes, under
the same load, caches and allocator as in production rather than in a quiet loop. `--ship` gives
every chain's recorder the moto S3 bucket, so closed segments are gzipped and uploaded as deployed
(without it records stay in the spool, and the uploader's CPU is not in the figures).

Run: .venv/bin/python benchmarks/chain_costs.py --chains core,full,full@/tmp/base --rounds 3
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

from jitgate.devstack.gateway import start_gateway

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import bench_stack, cpu_seconds, documents, rerank_body
from gateway_overhead import _load, _summary

_IMPORTS = """
import sys as _sys
_sys.path.append({bench!r})

from mitmproxy import http as _http
from offload_standin import OffloadStandIn

from addon import error_answers
from addon.approval_hold import ApprovalHold
from addon.credential_inject import CredentialInject
from addon.failsafe import fail_closed
from addon.leak_guard import LeakGuard
from addon.scope_guard import ScopeGuard
from addon.session_recorder import SessionRecorder
from addon.token_gate import TokenGate

error_answers.install()


class _Noop:
    def http_connect(self, flow):
        if flow.request.host.endswith(".invalid"):  # the readiness probe expects a refusal
            flow.response = _http.Response.make(403)

    def requestheaders(self, flow): pass
    def request(self, flow): pass
    def responseheaders(self, flow): pass
    def response(self, flow): pass
    def error(self, flow): pass
"""
CHAINS = {
    "noop": "[_Noop() for _ in range(6)]",
    "core": "[TokenGate(), ScopeGuard(), CredentialInject()]",
    "leak": "[TokenGate(), ScopeGuard(), LeakGuard(), CredentialInject()]",
    "rec": "[TokenGate(), ScopeGuard(), CredentialInject(), SessionRecorder()]",
    "hold": "[TokenGate(), ScopeGuard(), ApprovalHold(), CredentialInject()]",
    "full": "[TokenGate(), ScopeGuard(), LeakGuard(), ApprovalHold(), CredentialInject(), SessionRecorder()]",
    "ship": "",  # addon/jitgate_addons.py as shipped (the tree's own, with `@TREE`)
    # Diagnostic: the core plus a stand-in that burns leak_guard's and the recorder's CPU in a
    # child process while the hooks await it (benchmarks/offload_standin.py).
    "offload": "[TokenGate(), ScopeGuard(), CredentialInject(), OffloadStandIn()]",
}


# `--hooks`: each flow hook of the chain's addons (as the chain holds them, fail_closed wrapper
# included) is timed with the main thread's CPU clock; the totals are written every 200 calls.
# An async hook that really waits (the recorder's writer-thread fallback) also counts what the
# event loop ran meanwhile: rare here, and never on the fast path.
_HOOK_TIMES = """
import inspect as _inspect, json as _json, time as _time
_cpu, _calls = {{}}, {{}}


def _note(key, t0):
    _cpu[key] = _cpu.get(key, 0.0) + _time.thread_time() - t0
    _calls[key] = _calls.get(key, 0) + 1
    if sum(_calls.values()) % 200 == 0:
        with open({out!r}, "w") as f:
            _json.dump({{"cpu_s": _cpu, "calls": _calls}}, f)


def _timed(addon):
    for name in ("http_connect", "requestheaders", "request", "responseheaders", "response", "error"):
        hook = getattr(addon, name, None)
        if not callable(hook):
            continue
        key = type(addon).__name__ + "." + name
        if _inspect.iscoroutinefunction(hook):
            async def timed(flow, hook=hook, key=key):
                t0 = _time.thread_time()
                try:
                    await hook(flow)
                finally:
                    _note(key, t0)
        else:
            def timed(flow, hook=hook, key=key):
                t0 = _time.thread_time()
                try:
                    hook(flow)
                finally:
                    _note(key, t0)
        setattr(addon, name, timed)
    return addon


addons = [_timed(a) for a in addons]
"""


def _script(chain: str, tree: str | None, hook_times: Path | None = None) -> str:
    head = f"import sys\nsys.path.insert(0, {tree!r})\n" if tree else ""
    if chain == "ship":
        text = head + "from addon.jitgate_addons import addons\n"
    else:
        imports = _IMPORTS.format(bench=str(Path(__file__).resolve().parent))
        text = head + imports + f"\naddons = [fail_closed(a) for a in {CHAINS[chain]}]\n"
    return text + (_HOOK_TIMES.format(out=str(hook_times)) if hook_times else "")


def _hook_ms(path: Path) -> dict[str, float]:
    """Main-thread CPU ms per flow of each timed hook (flows: the most `request` calls of an addon)."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    flows = max((n for key, n in data["calls"].items() if key.endswith(".request")), default=0)
    if not flows:
        return {}
    ms = {key: round(sec * 1000 / flows, 3) for key, sec in data["cpu_s"].items()}
    return {"all": round(sum(ms.values()), 3), **dict(sorted(ms.items(), key=lambda kv: -kv[1]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--chains", default="core,full", help="comma-separated CHAIN or CHAIN@TREE")
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hooks", action="store_true", help="also time every hook of each chain (CPU ms per flow)")
    parser.add_argument("--ship", action="store_true", help="recorders ship their segments to the moto S3 bucket")
    args = parser.parse_args()
    specs = [s.strip() for s in args.chains.split(",") if s.strip()]
    for spec in specs:
        chain, _, tree = spec.partition("@")
        if chain not in CHAINS:
            parser.error(f"unknown chain {chain!r}; known: {', '.join(CHAINS)}")
        if tree and not (Path(tree) / "addon").is_dir():
            parser.error(f"{tree}: no addon/ folder (extract a commit with git archive)")

    docs = documents(100, 1024, random.Random(7))
    body = rerank_body(docs)
    real_key = "bench-" + secrets.token_urlsafe(24)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="jitgate-chains-") as tmp:
        work = Path(tmp)
        env = stack.enter_context(bench_stack(work, real_key, {"max_documents": 1000, "max_bytes": 4 * 1024 * 1024}))
        ct = {"Content-Type": "application/json"}
        paths: dict[str, dict[str, Any]] = {}
        pids: dict[str, int] = {}
        hook_files: dict[str, Path] = {}
        for i, spec in enumerate(["bare", *specs]):
            chain, _, tree = spec.partition("@")
            folder = work / f"gw{i}"
            folder.mkdir()
            script = None
            if chain != "bare":
                script = folder / "chain.py"
                times = folder / "hooks.json" if args.hooks and chain != "noop" else None
                script.write_text(_script(chain, tree or None, times))
                if times is not None:
                    hook_files[spec] = times
            with_token = chain not in ("bare", "noop")
            options = env.jitgate_options if with_token else env.bare_options
            if with_token and args.ship:  # each gateway its own id, so no segment key is shared
                options = {**options, "jitgate_bucket": env.aws.bucket, "jitgate_gateway_id": f"gw{i}"}
            gw = stack.enter_context(start_gateway(folder, options=options, script=script))
            pids[spec] = gw.proc.pid
            paths[spec] = {
                "headers": {**ct, "Authorization": "Bearer placeholder" if with_token else f"Bearer {real_key}"},
                "proxy": gw.proxy_url(env.token) if with_token else gw.url,
                "verify": gw.client_bundle(folder / "client.pem"),
            }
        runs: dict[str, list[tuple[list[float], float]]] = {spec: [] for spec in paths}
        cpu = dict.fromkeys(paths, 0.0)
        for _ in range(args.rounds):
            for spec, how in paths.items():
                before = cpu_seconds(pids[spec])
                url = f"{env.upstream_url}/v2/rerank"
                load = {"requests": args.requests, "concurrency": args.concurrency, "warmup": args.warmup}
                runs[spec].append(_load(url, body, **how, **load))
                cpu[spec] += cpu_seconds(pids[spec]) - before
        hooks = {spec: _hook_ms(path) for spec, path in hook_files.items()}
    per = (args.requests + args.warmup) * args.rounds
    result: dict[str, Any] = {"requests": args.requests * args.rounds, "rounds": args.rounds, "cpus": os.cpu_count()}
    for spec in paths:
        summary = _summary(runs[spec])
        result[spec] = {**summary, "cpu_ms_per_req": round(cpu[spec] * 1000 / per, 3)}
    for spec in specs:
        result[spec]["ratio_vs_bare"] = round(result[spec]["rps"] / result["bare"]["rps"], 3)
        if spec in hooks:
            result[spec]["hooks_cpu_ms_per_flow"] = hooks[spec]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
