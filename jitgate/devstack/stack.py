"""The whole local stack on loopback, in one state folder: what `jitgate dev` and `make demo` run.

A moto server seeded like the SAM stack, a dev OIDC issuer, the broker behind its local adapter,
a sample HTTPS rerank upstream (BM25), a real Chroma server (`chroma run`, with `candidates`
seeded) and the gateway (mitmdump + the addon chain). Fake upstream keys are generated at start and
live only in the moto server's Secrets Manager and the upstream.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jitgate.devstack.aws import Stack, broker_env, local_broker, moto_server, seed
from jitgate.devstack.chroma import ChromaServer, seed_candidates
from jitgate.devstack.gateway import Gateway, jitgate_options, start_gateway, write_bundle
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import (
    CHROMA_CONNECTION,
    CI_CLAIMS,
    PG_CONNECTION,
    RERANK_CONNECTIONS,
    STORE_CONNECTION,
    policy_dict,
    secret_id,
)
from jitgate.devstack.postgres import Postgres, start_postgres
from jitgate.devstack.upstream import Upstream
from jitgate.policy import parse_policy

# The vendors' public host names, so an unmodified SDK on its default URL goes through the gateway.
PUBLIC_HOSTS = {
    "cohere-test": ["api.cohere.com", "api.cohere.ai"],
    "jina-test": ["api.jina.ai"],
    "voyage-test": ["api.voyageai.com"],
}
DEV_SUBJECT = "repo:acme/search-ranker:ref:refs/heads/main"


@dataclass
class DevStack:
    """Start with `start()` (or `with`); `env` then holds what a job needs; `stop()` ends everything."""

    state_dir: Path
    segment_ms: int = 1000
    env: dict[str, str] = field(default_factory=dict)
    stack: Stack | None = None
    gateway: Gateway | None = None
    upstream: Upstream | None = None
    postgres: Postgres | None = None
    chroma: ChromaServer | None = None
    _exit: ExitStack = field(default_factory=ExitStack)

    def start(self, progress: Callable[[str], None] = lambda _step: None) -> DevStack:
        try:
            self._start(progress)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, progress: Callable[[str], None]) -> None:
        state = self.state_dir.resolve()
        state.mkdir(parents=True, exist_ok=True)
        progress("local AWS (moto server)")
        moto = self._exit.enter_context(moto_server())
        progress("dev OIDC issuer")
        issuer = self._exit.enter_context(OidcIssuer())
        progress("sample rerank upstream (HTTPS, BM25)")
        connections = [*RERANK_CONNECTIONS, STORE_CONNECTION, CHROMA_CONNECTION]
        keys = {secret_id(c): "dev-" + secrets.token_urlsafe(24) for c in connections}
        upstream = self._exit.enter_context(Upstream(api_keys=keys.values()))
        self.upstream = upstream
        upstream_ca = state / "upstream-ca.pem"
        upstream_ca.write_bytes(upstream.ca_pem())
        progress("Postgres 18 with pgvector (database ranking)")
        postgres = self._exit.enter_context(start_postgres())
        self.postgres = postgres
        keys[secret_id(PG_CONNECTION)] = json.dumps(postgres.secret())
        # The store answers on `localhost`, a leftover from when connections could not share an
        # upstream host (they may now: the token picks the connection); the other rerank
        # connections keep their (unreachable) defaults.
        progress("Chroma server (chroma run, candidates seeded)")
        chroma = self._exit.enter_context(ChromaServer(state / "chroma"))
        self.chroma = chroma
        seed_candidates(chroma.url)
        upstreams = {
            "cohere-test": upstream.url,
            STORE_CONNECTION: f"https://localhost:{upstream.port}",
            PG_CONNECTION: postgres.upstream,
            CHROMA_CONNECTION: chroma.url,
        }
        doc: dict[str, Any] = policy_dict(issuer.url, upstreams=upstreams)
        for name, hosts in PUBLIC_HOSTS.items():
            doc["connections"][name]["hosts"] = hosts
        policy_text = "# jitgate dev stack policy (generated)\n" + yaml.safe_dump(doc, sort_keys=False)
        policy = parse_policy(policy_text, source="dev policy")
        policy_path = state / "policy.yaml"
        policy_path.write_text(policy_text)
        progress("seeding KMS key, table, bucket, topic and secrets")
        stack = seed(moto.url, policy=policy, secrets=keys)
        self.stack = stack
        progress("broker (local adapter)")
        broker = self._exit.enter_context(local_broker(stack, policy_path))
        progress("gateway (mitmdump + jitgate addon chain)")
        options = jitgate_options(
            policy=policy_path,
            jwks_url=f"{broker.url}/.well-known/jwks.json",
            table=stack.table,
            aws_endpoint=moto.url,
            region=stack.region,
            upstream_ca=upstream_ca,
        )
        options.update(
            {
                "jitgate_issuer": broker.url,
                "jitgate_bucket": stack.bucket,
                "jitgate_spool_dir": str(state / "spool"),
                "jitgate_gateway_id": "dev",
                "jitgate_segment_ms": str(self.segment_ms),
                "jitgate_pg_listen": "127.0.0.1:0",
                "jitgate_metrics_port": "0",
            }
        )
        gw_env = {**broker_env(stack, policy_path), "PATH": os.environ.get("PATH", "")}
        gateway = start_gateway(state / "gateway", options=options, env=gw_env)
        self.gateway = gateway
        self._exit.callback(gateway.stop)
        bundle = write_bundle(state / "ca-bundle.pem", gateway.ca_pem)
        self.env = {
            "JITGATE_STATE_DIR": str(state),
            "JITGATE_BROKER_URL": broker.url,
            "JITGATE_GATEWAY": f"127.0.0.1:{gateway.port}",
            "JITGATE_PG_GATEWAY": f"127.0.0.1:{gateway.pg_port}",
            "JITGATE_GATEWAY_CA": str(gateway.confdir / "mitmproxy-ca-cert.pem"),
            "JITGATE_METRICS_URL": gateway.metrics_url() + "/metrics",
            "JITGATE_CA_BUNDLE": str(bundle),
            "JITGATE_CONNECTION": "cohere-test",
            "JITGATE_POLICY": str(policy_path),
            "JITGATE_DEV_ISSUER": issuer.url,
            "JITGATE_DEV_SUBJECT": DEV_SUBJECT,
            "JITGATE_DEV_CLAIMS": json.dumps(CI_CLAIMS),
            "JITGATE_CHROMA_URL": chroma.url,
            "JITGATE_BUCKET": stack.bucket,
            "JITGATE_TABLE": stack.table,
            "AWS_ENDPOINT_URL": moto.url,
            "AWS_REGION": stack.region,
            "AWS_DEFAULT_REGION": stack.region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
        (state / "env.sh").write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env.items()))
        (state / "stack.json").write_text(json.dumps(self.env, indent=2))

    def stop(self) -> None:
        self._exit.close()

    def __enter__(self) -> DevStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

