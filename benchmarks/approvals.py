"""Approvals and revocation on the data path: how long a human's decision and a revocation take to
reach a client, each against a baseline measured in the same run.

- `revocation_reach_ms`: a client keeps one TLS keep-alive connection through the gateway (its
  token bound at CONNECT), the token is revoked at the broker, and the client sends a request
  every 20 ms on that connection until one is refused; measured from the DELETE's answer to the
  first 403 `token_revoked`. Compared with the gateway's configured refresh interval and
  staleness bound (the promise), and with `request_ms`, one allowed request on the same path.
- `hold_resume_added_ms`: a rerank over the connection's document threshold is held; measured
  from the approve POST's answer to the client's upstream answer, minus `request_ms` (the same
  rerank, under the threshold, not held). The approval lands at a random point of the poll
  cycle, so expect about half the gateway's poll interval.

Run: .venv/bin/python benchmarks/approvals.py --json
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import random
import secrets
import ssl
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jitgate.devstack.aws import DEFAULT_REGION, FAKE_CREDENTIALS, local_broker, moto_server, seed  # noqa: E402
from jitgate.devstack.oidc_issuer import OidcIssuer  # noqa: E402
from jitgate.devstack.policy import ADMIN_GROUP, CI_CLAIMS, policy_dict, secret_id  # noqa: E402
from jitgate.devstack.upstream import Upstream  # noqa: E402
from jitgate.policy import parse_policy  # noqa: E402
from tests.e2e.gateway import jitgate_options, start_gateway  # noqa: E402

CI_SUB = "repo:acme/search-ranker:ref:refs/heads/main"
REFRESH, STALENESS, POLL = 2.0, 5.0, 1.0
HELD_AT = 5  # documents above which a rerank is held
QUERY = "capital of the united states"
DOCS = [f"document {i} about the capital of somewhere number {i}" for i in range(HELD_AT + 3)]


def _stats(xs: list[float]) -> dict[str, float]:
    return {"mean": round(statistics.fmean(xs), 1), "min": round(min(xs), 1), "max": round(max(xs), 1)}


def _connection(port: int, bundle: Path, up_port: int, token: str) -> http.client.HTTPSConnection:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ssl.create_default_context(cafile=str(bundle)))
    auth = base64.b64encode(f"jit:{token}".encode()).decode()
    conn.set_tunnel("127.0.0.1", up_port, headers={"Proxy-Authorization": f"Basic {auth}"})
    return conn


def _post(conn: http.client.HTTPSConnection, docs: list[str]) -> tuple[int, Any]:
    body = json.dumps({"model": "rerank-v3.5", "query": QUERY, "documents": docs})
    conn.request("POST", "/v2/rerank", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args()
    # The gateway child process reaches the moto server with these (fake) credentials.
    os.environ.update({**FAKE_CREDENTIALS, "AWS_DEFAULT_REGION": DEFAULT_REGION, "AWS_REGION": DEFAULT_REGION})

    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        moto = stack.enter_context(moto_server())
        issuer = stack.enter_context(OidcIssuer())
        key = secrets.token_urlsafe(24)
        upstream = stack.enter_context(Upstream(api_keys=[key], record=False))
        doc: Any = policy_dict(issuer.url, upstreams={"cohere-test": upstream.url})
        doc["connections"]["cohere-test"]["approval"] = {"max_documents": HELD_AT}
        policy_path = work / "policy.yaml"
        policy_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        policy = parse_policy(policy_path.read_text())
        fake = {c.credential.secret_id: secrets.token_urlsafe(18) for c in policy.connections.values()}
        fake[secret_id("cohere-test")] = key
        aws = seed(moto.url, policy=policy, secrets=fake)
        broker = stack.enter_context(local_broker(aws, policy_path, cwd=REPO)).url
        ca = work / "upstream-ca.pem"
        ca.write_bytes(upstream.ca_pem())
        options = jitgate_options(
            policy=policy_path, jwks_url=f"{broker}/.well-known/jwks.json", table=aws.table, aws_endpoint=moto.url,
            region=aws.region, upstream_ca=ca, revocation_refresh=REFRESH, revocation_staleness=STALENESS,
        )
        options.update(jitgate_approval_poll=str(POLL), jitgate_approval_timeout="60")
        gateway = stack.enter_context(start_gateway(work / "gw", options=options))
        bundle = gateway.client_bundle(work / "bundle.pem")
        http_ = stack.enter_context(httpx.Client(timeout=30))

        def mint() -> dict[str, Any]:
            oidc = issuer.mint(CI_SUB, CI_CLAIMS)
            resp = http_.post(f"{broker}/v1/tokens", json={"connection": "cohere-test"},
                              headers={"Authorization": f"Bearer {oidc}"})
            resp.raise_for_status()
            answer: dict[str, Any] = resp.json()
            return answer

        admin = {"Authorization": f"Bearer {issuer.mint('sec-oncall', {'groups': [ADMIN_GROUP]}, ttl=3600)}"}
        rng = random.Random(7)
        request_ms: list[float] = []
        reach_ms: list[float] = []
        resume_ms: list[float] = []
        for _ in range(args.trials):
            minted = mint()
            conn = _connection(gateway.port, bundle, upstream.port, minted["token"])
            for _ in range(5):  # baseline: allowed requests on the open connection
                t = time.perf_counter()
                status, body = _post(conn, DOCS[:HELD_AT])
                assert status == 200, body
                request_ms.append((time.perf_counter() - t) * 1000)

            # A held rerank on the same connection, approved as soon as it is listed.
            done: dict[str, float] = {}

            def held_call(c: http.client.HTTPSConnection = conn, out: dict[str, float] = done) -> None:
                status, _ = _post(c, DOCS)
                assert status == 200
                out["t"] = time.perf_counter()

            worker = threading.Thread(target=held_call)
            worker.start()
            hold_id = None
            while hold_id is None:
                items = http_.get(f"{broker}/v1/approvals", headers=admin).json()["approvals"]
                hold_id = next((a["id"] for a in items if a["summary"].get("jti") == minted["jti"]), None)
            time.sleep(rng.uniform(0, POLL))  # a human's decision lands at any point of the poll cycle
            resp = http_.post(f"{broker}/v1/approvals/{hold_id}/approve", json={"reason": "bench"}, headers=admin)
            resp.raise_for_status()
            approved = time.perf_counter()
            worker.join(60)
            resume_ms.append((done["t"] - approved) * 1000)

            owner = {"Authorization": f"Bearer {issuer.mint(CI_SUB, CI_CLAIMS)}"}
            http_.delete(f"{broker}/v1/tokens/{minted['jti']}", headers=owner).raise_for_status()
            revoked = time.perf_counter()
            sock = conn.sock
            while True:
                status, body = _post(conn, DOCS[:2])
                assert conn.sock is sock, "reconnected"
                if status != 200:
                    assert body["code"] == "token_revoked", body
                    reach_ms.append((time.perf_counter() - revoked) * 1000)
                    break
                time.sleep(0.02)
            conn.close()

    base = statistics.fmean(request_ms)
    result = {
        "trials": args.trials,
        "revocation_refresh_s": REFRESH,
        "revocation_staleness_s": STALENESS,
        "approval_poll_s": POLL,
        "request_ms": _stats(request_ms),
        "revocation_reach_ms": _stats(reach_ms),
        "revocation_within_bound": max(reach_ms) <= STALENESS * 1000,
        "hold_resume_ms": _stats(resume_ms),
        "hold_resume_added_ms": round(statistics.fmean(resume_ms) - base, 1),
    }
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
