"""The whole local stack on loopback, in one state folder: what `jitgate dev` and `make demo` run.

A moto server seeded like the SAM stack, a dev OIDC issuer, the broker behind its local adapter,
a sample HTTPS rerank upstream (BM25) per rerank dialect the policy names (Cohere, Jina, Voyage,
TEI), a real Chroma server (`chroma run`, with `candidates` seeded), Postgres with pgvector, and
the gateway (mitmdump + the addon chain). Fake upstream keys are generated at start and live only
in the moto server's Secrets Manager and the sample upstreams.

The policy is the dev policy (jitgate.devstack.policy) or a user's own file (`policy_file`), in
the same form: `issuer: dev` is the dev OIDC issuer, `upstream: dev:NAME` one of the stack's parts
(DEV_PARTS). Only the parts the policy names are started.
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

import trustme
import yaml

from jitgate.devstack.aws import Stack, broker_env, local_broker, moto_server, seed
from jitgate.devstack.chroma import ChromaServer, seed_candidates
from jitgate.devstack.gateway import Gateway, jitgate_options, start_gateway, write_bundle
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import (
    CI_CLAIMS,
    DEV_ISSUER,
    DEV_UPSTREAMS,
    bind_dev,
    dev_part,
    policy_dict,
)
from jitgate.devstack.postgres import Postgres, start_postgres
from jitgate.devstack.upstream import DIALECTS, Upstream
from jitgate.errors import PolicyError
from jitgate.policy import Policy, parse_policy

# The vendors' public host names, so an unmodified SDK on its default URL goes through the gateway.
PUBLIC_HOSTS = {
    "cohere-test": ["api.cohere.com", "api.cohere.ai"],
    "jina-test": ["api.jina.ai"],
    "voyage-test": ["api.voyageai.com"],
}
DEV_SUBJECT = "repo:acme/search-ranker:ref:refs/heads/main"
# Where each part seems to live while a policy is checked before anything starts.
_PLACEHOLDERS: dict[str, str] = {
    **{dialect: "https://127.0.0.1:443" for dialect in DIALECTS},
    "chroma": "http://127.0.0.1:8000",
    "postgres": "postgres://127.0.0.1:5432/ranking",
}


@dataclass(frozen=True)
class DevPorts:
    """Loopback ports to listen on; 0 picks a free one."""

    gateway: int = 0
    pg: int = 0
    broker: int = 0
    metrics: int = 0


def dev_policy_text() -> str:
    """The dev policy in the form a user's `--policy` file takes (`issuer: dev`, `upstream: dev:NAME`)."""
    doc: dict[str, Any] = policy_dict(DEV_ISSUER, upstreams=DEV_UPSTREAMS)
    for name, hosts in PUBLIC_HOSTS.items():
        doc["connections"][name]["hosts"] = hosts
    return "# jitgate dev stack policy (generated)\n" + yaml.safe_dump(doc, sort_keys=False)


def read_policy(text: str, *, source: str, issuer: str, parts: dict[str, str]) -> Policy:
    """`text` bound to the stack's issuer and parts, validated (errors name the line of `text`)."""
    return parse_policy(text, source=source, bind=lambda doc: bind_dev(doc, issuer=issuer, parts=parts, source=source))


def named_parts(text: str) -> set[str]:
    """The dev parts (`upstream: dev:NAME`) the connections of policy `text` name."""
    doc = yaml.safe_load(text)
    connections = doc.get("connections") if isinstance(doc, dict) else None
    if not isinstance(connections, dict):
        return set()
    return {p for c in connections.values() if isinstance(c, dict) and (p := dev_part(c)) is not None}


@dataclass
class DevStack:
    """Start with `start()` (or `with`); `env` then holds what a job needs; `stop()` ends everything."""

    state_dir: Path
    segment_ms: int = 1000
    policy_file: Path | None = None
    ports: DevPorts = field(default_factory=DevPorts)
    env: dict[str, str] = field(default_factory=dict)
    stack: Stack | None = None
    gateway: Gateway | None = None
    upstreams: dict[str, Upstream] = field(default_factory=dict)  # the sample rerank upstream of each dialect
    postgres: Postgres | None = None
    chroma: ChromaServer | None = None
    policy: Policy | None = None
    _exit: ExitStack = field(default_factory=ExitStack)

    @property
    def upstream(self) -> Upstream | None:
        """The Cohere sample upstream, when the policy names one."""
        return self.upstreams.get("cohere")

    def start(self, progress: Callable[[str], None] = lambda _step: None) -> DevStack:
        try:
            self._start(progress)
        except BaseException:
            self.stop()
            raise
        return self

    def _policy_text(self) -> tuple[str, str]:
        if self.policy_file is None:
            return dev_policy_text(), "dev policy"
        try:
            return self.policy_file.read_text(encoding="utf-8"), str(self.policy_file)
        except OSError as exc:
            raise PolicyError(f"{self.policy_file}: cannot read policy: {exc.strerror}") from None

    def _start(self, progress: Callable[[str], None]) -> None:
        state = self.state_dir.resolve()
        state.mkdir(parents=True, exist_ok=True)
        text, source = self._policy_text()
        # Checked before anything starts: a bad file stops here, naming its line.
        read_policy(text, source=source, issuer="https://127.0.0.1", parts=_PLACEHOLDERS)
        wanted = named_parts(text)
        progress("local AWS (moto server)")
        moto = self._exit.enter_context(moto_server())
        progress("dev OIDC issuer")
        issuer = self._exit.enter_context(OidcIssuer())
        parts: dict[str, str] = {}
        ca = trustme.CA()
        upstream_ca = state / "upstream-ca.pem"
        upstream_ca.write_bytes(ca.cert_pem.bytes())
        for dialect in (d for d in DIALECTS if d in wanted):
            progress(f"sample {dialect} rerank upstream (HTTPS, BM25)")
            self.upstreams[dialect] = self._exit.enter_context(Upstream(api_keys=(), ca=ca, dialect=dialect))
            parts[dialect] = self.upstreams[dialect].url
        if "postgres" in wanted:
            progress("Postgres 18 with pgvector (database ranking)")
            self.postgres = self._exit.enter_context(start_postgres())
            parts["postgres"] = self.postgres.upstream
        if "chroma" in wanted:
            progress("Chroma server (chroma run, candidates seeded)")
            self.chroma = self._exit.enter_context(ChromaServer(state / "chroma"))
            seed_candidates(self.chroma.url)
            parts["chroma"] = self.chroma.url
        policy = read_policy(text, source=source, issuer=issuer.url, parts=parts)
        self.policy = policy
        raw = yaml.safe_load(text)
        bound = bind_dev(raw, issuer=issuer.url, parts=parts, source=source)
        policy_path = state / "policy.yaml"
        policy_path.write_text(f"# jitgate dev stack policy, from {source}\n" + yaml.safe_dump(bound, sort_keys=False))
        # One generated key per secret; a `dev:postgres` connection's secret is the dev server's login.
        keys: dict[str, str] = {}
        for name, conn in policy.connections.items():
            if self.postgres is not None and dev_part(raw["connections"][name]) == "postgres":
                keys[conn.credential.secret_id] = json.dumps(self.postgres.secret())
            else:
                keys.setdefault(conn.credential.secret_id, "dev-" + secrets.token_urlsafe(24))
        for upstream in self.upstreams.values():
            upstream.set_api_keys(keys.values())
        progress("seeding KMS key, table, bucket, topic and secrets")
        stack = seed(moto.url, policy=policy, secrets=keys)
        self.stack = stack
        progress("broker (local adapter)")
        broker = self._exit.enter_context(local_broker(stack, policy_path, port=self.ports.broker))
        progress("gateway (mitmdump + jitgate addon chain)")
        options = jitgate_options(
            policy=policy_path,
            jwks_url=f"{broker.url}/.well-known/jwks.json",
            table=stack.table,
            aws_endpoint=moto.url,
            region=stack.region,
            upstream_ca=upstream_ca,
        )
        with_pg = any(c.dialect == "postgres" for c in policy.connections.values())
        options.update(
            {
                "jitgate_issuer": broker.url,
                "jitgate_bucket": stack.bucket,
                "jitgate_spool_dir": str(state / "spool"),
                "jitgate_gateway_id": "dev",
                "jitgate_segment_ms": str(self.segment_ms),
                "jitgate_pg_listen": f"127.0.0.1:{self.ports.pg}" if with_pg else "",
                "jitgate_metrics_port": str(self.ports.metrics),
            }
        )
        gw_env = {**broker_env(stack, policy_path), "PATH": os.environ.get("PATH", "")}
        gateway = start_gateway(state / "gateway", options=options, env=gw_env, listen_port=self.ports.gateway)
        self.gateway = gateway
        self._exit.callback(gateway.stop)
        bundle = write_bundle(state / "ca-bundle.pem", gateway.ca_pem)
        first = "cohere-test" if "cohere-test" in policy.connections else next(iter(policy.connections))
        self.env = {
            "JITGATE_STATE_DIR": str(state),
            "JITGATE_BROKER_URL": broker.url,
            "JITGATE_GATEWAY": f"127.0.0.1:{gateway.port}",
            **({"JITGATE_PG_GATEWAY": f"127.0.0.1:{gateway.pg_port}"} if gateway.pg_port else {}),
            "JITGATE_GATEWAY_CA": str(gateway.confdir / "mitmproxy-ca-cert.pem"),
            "JITGATE_METRICS_URL": gateway.metrics_url() + "/metrics",
            "JITGATE_CA_BUNDLE": str(bundle),
            "JITGATE_CONNECTION": first,
            "JITGATE_POLICY": str(policy_path),
            "JITGATE_DEV_ISSUER": issuer.url,
            "JITGATE_DEV_SUBJECT": DEV_SUBJECT,
            "JITGATE_DEV_CLAIMS": json.dumps(CI_CLAIMS),
            **({"JITGATE_CHROMA_URL": self.chroma.url} if self.chroma is not None else {}),
            # TEI is self-hosted, under no public name: a job calls this URL (through the gateway).
            **({"JITGATE_TEI_URL": self.upstreams["tei"].url} if "tei" in self.upstreams else {}),
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

