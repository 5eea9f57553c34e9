"""The real-mitmdump gateway helpers for end-to-end tests; they live in jitgate.devstack.gateway
(shared with `jitgate dev`, the demo and the benchmarks) and are re-exported here, with one
helper for the modules that run their own broker and gateway on a policy of their own."""

from __future__ import annotations

from pathlib import Path

from jitgate.devstack.aws import Stack
from jitgate.devstack.gateway import ENTRY, MITMDUMP, Gateway, jitgate_options, start_gateway, write_bundle
from jitgate.devstack.upstream import Upstream

__all__ = ["ENTRY", "MITMDUMP", "Gateway", "jitgate_options", "policy_gateway", "start_gateway", "write_bundle"]


def policy_gateway(
    work: Path,
    *,
    upstream: Upstream,
    broker: str,
    stack: Stack,
    moto_server: str,
    policy: Path,
    revocation_refresh: float = 2.0,
    revocation_staleness: float = 5.0,
    **options: str,
) -> Gateway:
    """A gateway on `policy` that trusts `upstream`'s CA and `broker`'s keys; `options` are more `--set`s."""
    ca = work / "upstream-ca.pem"
    ca.write_bytes(upstream.ca_pem())
    opts = jitgate_options(
        policy=policy, jwks_url=f"{broker}/.well-known/jwks.json", table=stack.table, aws_endpoint=moto_server,
        region=stack.region, upstream_ca=ca, revocation_refresh=revocation_refresh,
        revocation_staleness=revocation_staleness,
    )
    return start_gateway(work, options={**opts, **options})
