"""A dependency of the gateway goes away under load, then comes back.

Each test runs the full chain (mitmdump + every addon) with one service behind a TCP relay that
the test cuts: Secrets Manager, DynamoDB or the broker's JWKS. Background clients keep sending
reranks with unique markers; afterwards every answer is checked against what the failure rules
allow, against what the upstream received, and against the session records (one per request,
with the same status and error code).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.hashes import SHA256

from jitgate.devstack.aws import Stack
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import secret_id
from jitgate.devstack.upstream import Upstream
from tests.relay import relay_to
from tests.reliability.harness import (
    Load,
    claims_for,
    client,
    full_gateway,
    outcome_counts,
    record_counts,
    records,
    rerank,
    sign_with,
    wait_for,
    write_policy,
)

SECRET_TTL = 4
STALENESS = 3.0
REFRESH = 0.5


def _upstream_keys(stack: Stack) -> list[str]:
    return [stack.secrets[secret_id("cohere-test")]]


def _settled_records(moto: str, stack: Stack, gateway_id: str, spool: Path, want: int) -> list[dict[str, Any]]:
    """The load's records once all of them are written (shipped or still spooled)."""
    found: list[dict[str, Any]] = []

    def enough() -> bool:
        nonlocal found
        found = records(moto, stack.bucket, gateway_id, spool)
        return sum(record_counts(found).values()) >= want

    wait_for(enough, 20)
    return found


def _forwarded_markers(up: Upstream) -> list[str]:
    import json

    out = []
    for r in up.received:
        if r.path == "/v2/rerank":
            query = json.loads(r.body).get("query", "")
            if query.startswith("mk"):
                out.append(query.split()[0])
    return out


def test_secrets_manager_unreachable_serves_the_cached_secret_until_its_ttl_then_503(
    tmp_path: Path, oidc_issuer: OidcIssuer, broker: str, aws_stack: Stack, moto_server: str,
    mint: Callable[..., dict[str, Any]],
) -> None:
    with Upstream(api_keys=_upstream_keys(aws_stack)) as up, relay_to(moto_server) as relay:
        gateway_id = "rel-sm-" + secrets.token_hex(3)
        gw = full_gateway(
            tmp_path, policy=write_policy(tmp_path, oidc_issuer.url, up), upstream=up, broker=broker,
            stack=aws_stack, moto=moto_server, gateway_id=gateway_id,
            aws_env={"AWS_ENDPOINT_URL": moto_server, "AWS_ENDPOINT_URL_SECRETS_MANAGER": relay.url},
            jitgate_secret_ttl=str(SECRET_TTL),
        )
        bundle = gw.client_bundle(tmp_path / "bundle.pem")
        token = mint("cohere-test")["token"]
        with gw:
            with client(gw, bundle, token) as c:
                assert rerank(c, up).status_code == 200  # the secret is read and cached now
            fetched = time.monotonic()
            with Load(lambda: client(gw, bundle, token), up.url) as load:
                relay.up = False
                cut = time.monotonic()
                assert wait_for(lambda: any(s == 503 for _, _, s, _, _ in load.log), SECRET_TTL + 15)
                time.sleep(max(1.0, fetched + SECRET_TTL + 4.0 - time.monotonic()))  # well past the TTL
                relay.up = True
                back = time.monotonic()
                assert wait_for(lambda: load.log[-1][2] == 200, 15)
                time.sleep(0.5)
            log = list(load.log)
            assert gw.proc.poll() is None
    counts = outcome_counts(log)
    print(f"secrets manager cut: {len(log)} requests, outcomes {counts}")
    assert set(counts) <= {(200, ""), (503, "credential_unavailable")}, counts
    # Served from the cache while it was fresh, refused once it aged past its TTL with no way to renew it.
    during = [entry for entry in log if cut <= entry[0] and entry[1] <= back]
    assert any(s == 200 for _, _, s, _, _ in during), "the cached secret was not served during the outage"
    late = [(round(start - fetched, 2), s) for start, _, s, _, _ in during if start > fetched + SECRET_TTL + 2.0]
    assert late and {s for _, s in late} == {503}, late
    # A refused request never reached the upstream; every answered one did, once.
    ok = [m for _, _, s, _, m in log if s == 200]
    forwarded = _forwarded_markers(up)
    assert sorted(forwarded) == sorted(ok), (len(forwarded), len(ok), set(forwarded) ^ set(ok))
    recs = _settled_records(moto_server, aws_stack, gateway_id, tmp_path / "spool", len(log) + 1)
    assert record_counts(recs) == {**counts, (200, ""): counts[(200, "")] + 1}, record_counts(recs)


def test_dynamodb_unreachable_refuses_past_the_staleness_bound(
    tmp_path: Path, oidc_issuer: OidcIssuer, broker: str, aws_stack: Stack, moto_server: str,
    mint: Callable[..., dict[str, Any]],
) -> None:
    with Upstream(api_keys=_upstream_keys(aws_stack)) as up, relay_to(moto_server) as relay:
        gateway_id = "rel-ddb-" + secrets.token_hex(3)
        gw = full_gateway(
            tmp_path, policy=write_policy(tmp_path, oidc_issuer.url, up), upstream=up, broker=broker,
            stack=aws_stack, moto=moto_server, gateway_id=gateway_id,
            aws_env={"AWS_ENDPOINT_URL": moto_server, "AWS_ENDPOINT_URL_DYNAMODB": relay.url},
        )
        bundle = gw.client_bundle(tmp_path / "bundle.pem")
        token = mint("cohere-test")["token"]  # the grant's max_requests puts a DynamoDB counter on the path
        with gw, Load(lambda: client(gw, bundle, token), up.url) as load:
            assert wait_for(lambda: load.count() >= 20, 30)
            relay.up = False
            cut = time.monotonic()
            assert wait_for(lambda: load.log[-1][3] == "revocation_unavailable", STALENESS + 15)
            time.sleep(max(0.0, cut + STALENESS + REFRESH + 4.0 - time.monotonic()))  # well past the bound
            relay.up = True
            back = time.monotonic()
            # Liveness, not speed: a loaded machine may take a while for the next refresh to land.
            recovered = wait_for(lambda: load.log[-1][2] == 200, 40)
            assert recovered, ("no 200 after DynamoDB came back", outcome_counts(list(load.log)[-40:]),
                               "\n".join(list(gw.log)[-20:]))
            time.sleep(0.5)
            load.stop()
            log = list(load.log)
            assert gw.proc.poll() is None
    counts = outcome_counts(log)
    print(f"dynamodb cut: {len(log)} requests, outcomes {counts}")
    allowed = {(200, ""), (503, "revocation_unavailable"), (503, "usage_unavailable")}
    assert set(counts) <= allowed, counts
    assert counts.get((503, "revocation_unavailable"), 0) > 0
    # Past the bound (staleness + one refresh period) nothing is answered from stale state.
    bound = cut + STALENESS + REFRESH + 1.0
    assert {s for start, _, s, _, _ in log if bound < start and start < back} == {503}
    ok = [m for _, _, s, _, m in log if s == 200]
    forwarded = _forwarded_markers(up)
    assert sorted(forwarded) == sorted(ok), (len(forwarded), len(ok), set(forwarded) ^ set(ok))
    recs = _settled_records(moto_server, aws_stack, gateway_id, tmp_path / "spool", len(log))
    assert record_counts(recs) == counts, record_counts(recs)


def _unknown_kid_token(broker: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return sign_with(
        lambda msg: key.sign(msg, ec.ECDSA(SHA256())),
        {"alg": "ES256", "typ": "JWT", "kid": "rotated-" + secrets.token_hex(4)},
        claims_for(broker),
    )


def test_broker_jwks_unreachable_known_keys_keep_working_unknown_kid_refused(
    tmp_path: Path, oidc_issuer: OidcIssuer, broker: str, aws_stack: Stack, moto_server: str,
    mint: Callable[..., dict[str, Any]],
) -> None:
    with Upstream(api_keys=_upstream_keys(aws_stack)) as up, relay_to(broker) as relay:
        gateway_id = "rel-jwks-" + secrets.token_hex(3)
        gw = full_gateway(
            tmp_path, policy=write_policy(tmp_path, oidc_issuer.url, up), upstream=up, broker=broker,
            stack=aws_stack, moto=moto_server, gateway_id=gateway_id,
            jwks_url=f"{relay.url}/.well-known/jwks.json",
            jitgate_jwks_refresh="1",  # routine refreshes fail during the outage too
            jitgate_jwks_refetch_interval="0",
        )
        bundle = gw.client_bundle(tmp_path / "bundle.pem")
        seen_token = mint("cohere-test")["token"]
        fresh_token = mint("cohere-test")["token"]  # same key, never shown to the gateway before the outage
        with gw, Load(lambda: client(gw, bundle, seen_token), up.url) as load:
            assert wait_for(lambda: load.count() >= 10, 30)
            relay.up = False
            time.sleep(2.5)  # at least two routine refreshes fail
            with client(gw, bundle, fresh_token) as c:
                fresh = [rerank(c, up).status_code for _ in range(3)]
            unknown = []
            for _ in range(3):
                with client(gw, bundle, _unknown_kid_token(broker)) as c:
                    resp = rerank(c, up)
                    unknown.append((resp.status_code, resp.json()["code"]))
            relay.up = True
            time.sleep(0.5)
            load.stop()
            log = list(load.log)
            assert gw.proc.poll() is None
    print(f"jwks cut: {len(log)} load requests {outcome_counts(log)}, fresh known-kid {fresh}, unknown kid {unknown}")
    assert fresh == [200, 200, 200]
    assert set(unknown) <= {(503, "jwks_unavailable"), (401, "invalid_token")}
    assert (503, "jwks_unavailable") in unknown  # it tried the broker, found it gone, failed closed
    assert outcome_counts(log) == {(200, ""): len(log)}  # the known key never stopped working
    forwarded = _forwarded_markers(up)
    assert sorted(forwarded) == sorted(m for *_, m in log)
    recs = _settled_records(moto_server, aws_stack, gateway_id, tmp_path / "spool", len(log) + 6)
    counts = record_counts(recs)
    assert counts[(200, "")] == len(log) + 3
    assert sum(n for (s, _), n in counts.items() if s != 200) == 3


@pytest.fixture(autouse=True)
def _no_env_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)

