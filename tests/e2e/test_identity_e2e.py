"""Identity and revocation end to end (issue 17): a moto server, the broker behind its local
adapter, two real OIDC issuers, an HTTPS upstream with a private CA and `mitmdump -s
addon/jitgate_addons.py`.

- A revoked token stays refused while any gateway could still accept it (exp plus the leeway),
  and a revoke in that window succeeds.
- Admin and approver groups belong to their issuer: a second trusted issuer's identity claiming
  the first issuer's admin or approver group can revoke, list and decide nothing of the first's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from jitgate.devstack.aws import Stack, local_broker
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import ADMIN_GROUP, APPROVER_GROUP, CI_CLAIMS, MAINTAINER_SUB, policy_dict, secret_id
from jitgate.devstack.upstream import Upstream
from jitgate.token import MAX_LEEWAY
from tests.e2e.gateway import Gateway, policy_gateway

REPO = Path(__file__).resolve().parents[2]
CI_SUB = "repo:acme/search-ranker:ref:refs/heads/main"
PARTNER_SUB = "ext:partner-bot"
REFRESH = 0.5  # seconds between the gateway's revocation refreshes
STALENESS = 3.0
HELD_DOCS = 6  # more than the cohere connection's max_documents: held for the admins
DOCS = [f"document {i} about the capital of a country" for i in range(HELD_DOCS)]


@pytest.fixture(scope="module")
def partner() -> Iterator[OidcIssuer]:
    """A second trusted issuer, whose only grant is for `sub: ext:*`."""
    with OidcIssuer() as issuer:
        yield issuer


@pytest.fixture(scope="module")
def upstream(aws_stack: Stack) -> Iterator[Upstream]:
    with Upstream(api_keys=[aws_stack.secrets[secret_id("cohere-test")]]) as up:
        yield up


@pytest.fixture(scope="module")
def policy_file(
    tmp_path_factory: pytest.TempPathFactory, oidc_issuer: OidcIssuer, partner: OidcIssuer, upstream: Upstream
) -> Path:
    doc: Any = policy_dict(oidc_issuer.url, upstreams={"cohere-test": upstream.url})
    doc["issuers"].append({"issuer": partner.url, "audience": "jitgate"})
    doc["connections"]["cohere-test"]["approval"] = {"max_documents": HELD_DOCS - 1}  # decided by the admins
    doc["grants"].append(
        {
            "name": "partner-bots",
            "match": {"issuer": partner.url, "claims": {"sub": ["ext:*"]}},
            "connections": ["jina-test"],
            "operations": ["rerank"],
            "max_ttl": "10m",
        }
    )
    path = tmp_path_factory.mktemp("identity") / "policy.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def broker(aws_stack: Stack, policy_file: Path) -> Iterator[str]:
    with local_broker(aws_stack, policy_file, cwd=REPO) as proc:
        yield proc.url


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: Upstream, broker: str, aws_stack: Stack, moto_server: str,
    policy_file: Path,
) -> Iterator[Gateway]:
    with policy_gateway(
        tmp_path_factory.mktemp("identity-gateway"), upstream=upstream, broker=broker, stack=aws_stack,
        moto_server=moto_server, policy=policy_file, revocation_refresh=REFRESH, revocation_staleness=STALENESS,
        jitgate_approval_timeout="60", jitgate_approval_poll="0.2",
    ) as gw:
        yield gw
        if gw.proc.poll() is not None:
            pytest.fail("the gateway died:\n" + "\n".join(gw.log))


@pytest.fixture(scope="module")
def bundle(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gateway.client_bundle(tmp_path_factory.mktemp("identity-client") / "bundle.pem")


# -- helpers ------------------------------------------------------------------------------------


def _auth(oidc: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {oidc}"}


def _ci(issuer: OidcIssuer) -> str:
    return issuer.mint(CI_SUB, CI_CLAIMS)


def _partner(partner: OidcIssuer, *groups: str) -> str:
    return partner.mint(PARTNER_SUB, {"groups": list(groups)})


def _mint(broker: str, oidc: str, connection: str = "cohere-test", **body: Any) -> httpx.Response:
    return httpx.post(f"{broker}/v1/tokens", json={"connection": connection, **body}, headers=_auth(oidc), timeout=10)


def _revoke(broker: str, oidc: str, jti: str) -> httpx.Response:
    return httpx.delete(f"{broker}/v1/tokens/{jti}", headers=_auth(oidc), timeout=10)


def _listed(broker: str, oidc: str) -> list[dict[str, Any]]:
    resp = httpx.get(f"{broker}/v1/approvals", headers=_auth(oidc), timeout=10)
    assert resp.status_code == 200, resp.text
    approvals: list[dict[str, Any]] = resp.json()["approvals"]
    return approvals


def _decide(broker: str, oidc: str, approval_id: str, verdict: str) -> httpx.Response:
    return httpx.post(f"{broker}/v1/approvals/{approval_id}/{verdict}", json={"reason": "ticket 17"},
                      headers=_auth(oidc), timeout=10)


def _rerank(gateway: Gateway, bundle: Path, upstream: Upstream, token: str, docs: list[str]) -> httpx.Response:
    with httpx.Client(proxy=gateway.proxy_url(token), verify=str(bundle), timeout=90) as client:
        return client.post(f"{upstream.url}/v2/rerank", json={"model": "rerank-v3.5", "query": "capital?",
                                                               "documents": docs})


def _refused_until(gateway: Gateway, bundle: Path, upstream: Upstream, token: str, until: float) -> httpx.Response:
    """The gateway's answer once it refuses `token`, polling until `until` (epoch seconds) at the latest."""
    resp = _rerank(gateway, bundle, upstream, token, DOCS[:2])
    while resp.status_code == 200 and time.time() < until:
        time.sleep(REFRESH / 2)
        resp = _rerank(gateway, bundle, upstream, token, DOCS[:2])
    return resp


def _sleep_until(moment: float) -> None:
    while (left := moment - time.time()) > 0:
        time.sleep(min(left, 0.5))


# -- 1. revoked stays revoked -------------------------------------------------------------------


def test_a_revoked_token_stays_refused_after_exp_and_a_revoke_in_the_leeway_succeeds(
    broker: str, oidc_issuer: OidcIssuer, gateway: Gateway, bundle: Path, upstream: Upstream
) -> None:
    early, late = (_mint(broker, _ci(oidc_issuer), ttl=2).json() for _ in range(2))
    assert _rerank(gateway, bundle, upstream, early["token"], DOCS[:2]).status_code == 200
    assert _revoke(broker, _ci(oidc_issuer), early["jti"]).status_code == 200
    refused = _refused_until(gateway, bundle, upstream, early["token"], until=early["expires_at"] + MAX_LEEWAY)
    assert (refused.status_code, refused.json()["code"]) == (403, "token_revoked")

    # Past exp (and several revocation refreshes past it), but inside the gateway's leeway.
    _sleep_until(max(early["expires_at"], late["expires_at"]) + 4 * REFRESH)
    resp = _rerank(gateway, bundle, upstream, early["token"], DOCS[:2])
    assert (resp.status_code, resp.json().get("code")) == (403, "token_revoked")
    again = _revoke(broker, _ci(oidc_issuer), early["jti"])
    assert again.status_code == 200 and again.json()["already_revoked"] is True, again.text
    assert again.json()["expires_at"] == early["expires_at"]

    # A token not revoked before its exp is still accepted in the leeway, so it can be revoked then.
    assert _rerank(gateway, bundle, upstream, late["token"], DOCS[:2]).status_code == 200
    first = _revoke(broker, _ci(oidc_issuer), late["jti"])
    assert first.status_code == 200 and first.json()["already_revoked"] is False, first.text
    refused = _refused_until(gateway, bundle, upstream, late["token"], until=late["expires_at"] + MAX_LEEWAY)
    assert (refused.status_code, refused.json()["code"]) == (403, "token_revoked")


# -- 2. groups belong to their issuer -----------------------------------------------------------


def test_another_issuers_identity_claiming_the_admin_group_cannot_revoke(
    broker: str, oidc_issuer: OidcIssuer, partner: OidcIssuer, gateway: Gateway, bundle: Path, upstream: Upstream
) -> None:
    assert _mint(broker, _partner(partner), "jina-test").status_code == 201  # the partner issuer is trusted
    minted = _mint(broker, _ci(oidc_issuer)).json()
    resp = _revoke(broker, _partner(partner, ADMIN_GROUP), minted["jti"])
    assert (resp.status_code, resp.json()["code"]) == (403, "not_token_owner"), resp.text
    assert _rerank(gateway, bundle, upstream, minted["token"], DOCS[:2]).status_code == 200
    # The control: the first issuer's admin group may.
    admin = oidc_issuer.mint("alice@example.com", {"groups": [ADMIN_GROUP]})
    assert _revoke(broker, admin, minted["jti"]).status_code == 200


def test_another_issuers_identity_claiming_the_admin_group_cannot_see_or_decide_a_hold(
    broker: str, oidc_issuer: OidcIssuer, partner: OidcIssuer, gateway: Gateway, bundle: Path, upstream: Upstream
) -> None:
    from tests.e2e.test_approvals_e2e import Background

    minted = _mint(broker, _ci(oidc_issuer)).json()
    call = Background(lambda: _rerank(gateway, bundle, upstream, minted["token"], DOCS))
    admin = oidc_issuer.mint("alice@example.com", {"groups": [ADMIN_GROUP]})
    deadline = time.monotonic() + 30
    hold: dict[str, Any] | None = None
    while hold is None and time.monotonic() < deadline:
        hold = next((a for a in _listed(broker, admin) if a["summary"].get("jti") == minted["jti"]), None)
        time.sleep(0.2)
    assert hold is not None, "the hold never showed up"

    impostor = _partner(partner, ADMIN_GROUP)
    assert all(a["id"] != hold["id"] for a in _listed(broker, impostor))
    assert httpx.get(f"{broker}/v1/approvals/{hold['id']}", headers=_auth(impostor), timeout=10).status_code == 404
    resp = _decide(broker, impostor, hold["id"], "approve")
    assert (resp.status_code, resp.json()["code"]) == (403, "not_an_approver"), resp.text
    assert call.running()
    arrived = len(upstream.received)

    assert _decide(broker, admin, hold["id"], "deny").status_code == 200
    answer = call.result()
    assert (answer.status_code, answer.json()["code"]) == (403, "approval_denied")
    assert len(upstream.received) == arrived  # the held request never went out


def test_another_issuers_identity_claiming_the_approver_group_cannot_list_or_decide_issuance(
    broker: str, oidc_issuer: OidcIssuer, partner: OidcIssuer
) -> None:
    resp = _mint(broker, oidc_issuer.mint(MAINTAINER_SUB), "store-test")
    assert resp.status_code == 202, resp.text
    approval_id = resp.json()["approval_id"]
    impostor = _partner(partner, APPROVER_GROUP)
    assert all(a["id"] != approval_id for a in _listed(broker, impostor))
    decided = _decide(broker, impostor, approval_id, "approve")
    assert (decided.status_code, decided.json()["code"]) == (403, "not_an_approver"), decided.text
    lead = oidc_issuer.mint("carol@example.com", {"groups": [APPROVER_GROUP]})
    assert any(a["id"] == approval_id for a in _listed(broker, lead))  # the control
    # Closed, so no other test of this table's session finds it pending.
    assert _decide(broker, lead, approval_id, "deny").status_code == 200
