"""GET /v1/connections: what the caller's own identity may get, and nothing of others' (issue 25, item 4)."""

from __future__ import annotations

import httpx

from broker.local import serve
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import (
    CHROMA_CONNECTION,
    CI_CLAIMS,
    MAINTAINER_SUB,
    PG_CONNECTION,
    READER_SUB,
    RERANK_CONNECTIONS,
    STORE_CONNECTION,
)
from jitgate.policy import Policy
from tests.broker.conftest import Clock, Invoke, api_event

CI_SUB = "repo:acme/search-ranker:ref:refs/heads/main"


def _listed(invoke: Invoke, oidc: str | None) -> tuple[int, dict[str, object]]:
    status, body, headers = invoke(api_event("GET", "/v1/connections", oidc))
    if status == 200:
        assert headers["cache-control"] == "no-store"
    return status, body


def test_ci_identity_sees_its_rerank_connections_only(invoke: Invoke, issuer: OidcIssuer, clock: Clock) -> None:
    status, body = _listed(invoke, issuer.mint(CI_SUB, CI_CLAIMS, now=clock.now))
    assert status == 200, body
    listed = {c["connection"]: c for c in body["connections"]}  # type: ignore[union-attr, index]
    assert set(listed) == set(RERANK_CONNECTIONS)
    for name, dialect in RERANK_CONNECTIONS.items():
        assert listed[name] == {
            "connection": name, "dialect": dialect, "operations": ["rerank"], "max_ttl": 1800,
            "approval_required": False,
        }


def test_each_identity_gets_the_union_of_its_grants(invoke: Invoke, issuer: OidcIssuer, clock: Clock) -> None:
    _, reader = _listed(invoke, issuer.mint(READER_SUB, {}, now=clock.now))
    by_name = {c["connection"]: c["operations"] for c in reader["connections"]}  # type: ignore[union-attr, index]
    assert by_name == {
        STORE_CONNECTION: ["get", "query"],
        PG_CONNECTION: ["select"],
        CHROMA_CONNECTION: ["count", "get", "query"],
    }
    _, maint = _listed(invoke, issuer.mint(MAINTAINER_SUB, {}, now=clock.now))
    listed = {c["connection"]: c for c in maint["connections"]}  # type: ignore[union-attr, index]
    assert listed[STORE_CONNECTION]["approval_required"] is True
    assert listed[PG_CONNECTION]["operations"] == ["delete", "insert", "select", "update"]
    assert listed[CHROMA_CONNECTION]["max_ttl"] == 3600
    assert not set(RERANK_CONNECTIONS) & set(listed)


def test_an_identity_no_grant_matches_sees_nothing(invoke: Invoke, issuer: OidcIssuer, clock: Clock) -> None:
    status, body = _listed(invoke, issuer.mint("repo:evil/x:ref:refs/heads/main", {"repository": "evil/x"},
                                               now=clock.now))
    assert (status, body) == (200, {"connections": []})


def test_needs_a_verified_identity(invoke: Invoke, issuer: OidcIssuer, clock: Clock) -> None:
    assert _listed(invoke, None)[1]["code"] == "unauthenticated"
    stale = issuer.mint(CI_SUB, CI_CLAIMS, now=clock.now - 86400)
    status, body = _listed(invoke, stale)
    assert status == 401 and "connections" not in body
    forged = issuer.mint(CI_SUB, CI_CLAIMS, now=clock.now)[:-4] + "AAAA"
    assert _listed(invoke, forged)[0] == 401


def test_through_the_local_adapter(svc: object, issuer: OidcIssuer, clock: Clock, policy: Policy) -> None:
    server, base_url = serve()
    try:
        oidc = issuer.mint(READER_SUB, {}, now=clock.now)
        resp = httpx.get(f"{base_url}/v1/connections", headers={"Authorization": f"Bearer {oidc}"}, timeout=10)
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
        names = [c["connection"] for c in resp.json()["connections"]]
        assert names == sorted(names) and set(names) < set(policy.connections)
        assert httpx.get(f"{base_url}/v1/connections", timeout=10).status_code == 401
    finally:
        server.shutdown()
        server.server_close()
