"""Broker issuance: mint latency end to end, against baselines measured in the same run.

- `mint`: POST /v1/tokens over real HTTP to `python -m broker.local` (OIDC check with cached
  keys, grants, DynamoDB put, KMS Sign, S3 token event) backed by a moto server.
- baseline `jwks`: GET /.well-known/jwks.json on the same adapter (cached: HTTP + event
  conversion + resolver only), so `mint_added_ms` is what issuance itself costs.
- `verify`: the broker's OidcVerifier on one RS256 identity token (keys cached) vs. baseline
  `pyjwt`: `jwt.decode` with the same key and checks, in process.

Run: .venv/bin/python benchmarks/broker_mint.py --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from broker.oidc import OidcVerifier  # noqa: E402
from jitgate.devstack.aws import local_broker, moto_server, seed  # noqa: E402
from jitgate.devstack.oidc_issuer import OidcIssuer  # noqa: E402
from jitgate.devstack.policy import CI_CLAIMS, dev_policy, policy_yaml  # noqa: E402

CI_SUB = "repo:acme/search-ranker:ref:refs/heads/main"


def _timed(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def _pct(xs: list[float], q: float) -> float:
    return round(statistics.quantiles(xs, n=100)[int(q) - 1], 3)


def run(n: int) -> dict[str, Any]:
    with OidcIssuer() as idp, moto_server() as aws, tempfile.TemporaryDirectory() as tmp:
        policy = dev_policy(idp.url)
        stack = seed(aws.url, policy=policy, secrets={c.credential.secret_id: "x" for c in policy.connections.values()})
        path = Path(tmp) / "policy.yaml"
        path.write_text(policy_yaml(idp.url), encoding="utf-8")
        with local_broker(stack, path, cwd=REPO) as broker, httpx.Client(timeout=10) as http:
            oidc = idp.mint(CI_SUB, CI_CLAIMS, ttl=3600)
            headers = {"Authorization": f"Bearer {oidc}"}

            def mint() -> None:
                r = http.post(f"{broker.url}/v1/tokens", json={"connection": "cohere-test"}, headers=headers)
                assert r.status_code == 201, r.text

            def jwks() -> None:
                assert http.get(f"{broker.url}/.well-known/jwks.json").status_code == 200

            for _ in range(10):
                mint()
                jwks()
            mint_ms, jwks_ms = [], []
            for _ in range(n):  # interleaved, so load changes hit both alike
                mint_ms += _timed(mint, 1)
                jwks_ms += _timed(jwks, 1)

        verifier = OidcVerifier(policy.issuers)
        now = time.time()
        verifier.verify(oidc, now=now)
        key = idp.private_key().public_key()

        def ours() -> None:
            verifier.verify(oidc, now=now)

        def plain() -> None:
            jwt.decode(oidc, key, algorithms=["RS256"], audience="jitgate", issuer=idp.url,
                       options={"require": ["exp", "iat", "iss", "aud", "sub"]}, leeway=30)

        verify_ms, pyjwt_ms = [], []
        for _ in range(n * 5):
            verify_ms += _timed(ours, 1)
            pyjwt_ms += _timed(plain, 1)

    return {
        "benchmark": "broker_mint",
        "n": n,
        "mint_ms_p50": _pct(mint_ms, 50),
        "mint_ms_p95": _pct(mint_ms, 95),
        "baseline_jwks_ms_p50": _pct(jwks_ms, 50),
        "baseline_jwks_ms_p95": _pct(jwks_ms, 95),
        "mint_added_ms_p50": round(_pct(mint_ms, 50) - _pct(jwks_ms, 50), 3),
        "mints_per_second_sequential": round(1000 / statistics.mean(mint_ms), 1),
        "verify_ms_p50": _pct(verify_ms, 50),
        "baseline_pyjwt_decode_ms_p50": _pct(pyjwt_ms, 50),
        "verify_ratio_vs_pyjwt": round(statistics.median(verify_ms) / statistics.median(pyjwt_ms), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args()
    result = run(args.n)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
