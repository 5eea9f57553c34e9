"""`grantable`: what an identity may get, by the mint's own grant matching; `close_names` (issue 25, item 4)."""

from __future__ import annotations

import pytest

from jitgate.errors import NotGranted
from jitgate.policy import Identity, TokenRequest, close_names, evaluate_grants, grantable, parse_policy

POLICY = parse_policy("""
version: 1
issuers: [{issuer: "https://i", audience: jitgate}, {issuer: "https://other", audience: jitgate}]
connections:
  cohere-prod: {dialect: cohere, upstream: "https://api.cohere.com", credential: {secret_id: s/a}}
  cohere-staging: {dialect: cohere, upstream: "https://api.cohere.com", credential: {secret_id: s/b}}
  jina-prod: {dialect: jina, upstream: "https://api.jina.ai", credential: {secret_id: s/c}}
  store: {dialect: chroma, upstream: "https://store.example", credential: {secret_id: s/d}}
  secret-store: {dialect: chroma, upstream: "https://secret.example", credential: {secret_id: s/e}}
grants:
  - {name: ops, match: {issuer: "https://i", claims: {groups: [ops]}}, connections: ["*"], max_ttl: 2h}
  - {name: readers, match: {issuer: "https://i", claims: {groups: [dev]}}, connections: [store],
     operations: [query], max_ttl: 5m}
  - {name: writers, match: {issuer: "https://i", claims: {groups: [dev]}}, connections: [store],
     operations: [add], max_ttl: 30m,
     approval: {required: true, approvers: {members: [{issuer: "https://i", group: ops}]}}}
  - {name: rerank, match: {issuer: "https://i", claims: {sub: ["repo:acme/*"]}}, connections: [cohere-prod, jina-prod],
     operations: [rerank]}
""")


def _names(identity: Identity) -> list[str]:
    return [g.connection for g in grantable(POLICY, identity)]


def test_wildcard_grant_lists_every_connection_with_its_dialect_operations() -> None:
    listed = grantable(POLICY, Identity("https://i", "u", {"groups": ["ops"]}))
    assert [g.connection for g in listed] == sorted(POLICY.connections)
    store = next(g for g in listed if g.connection == "store")
    assert store.dialect == "chroma" and set(store.operations) == POLICY.connections["store"].operation_names
    assert {g.max_ttl for g in listed} == {7200}


def test_grants_of_one_identity_are_merged_and_approval_is_needed_only_if_every_grant_needs_it() -> None:
    (store,) = grantable(POLICY, Identity("https://i", "u", {"groups": ["dev"]}))
    assert (store.connection, store.operations, store.max_ttl, store.approval) == ("store", ("add", "query"), 1800,
                                                                                   False)
    writers_only = POLICY.model_copy(update={"grants": tuple(g for g in POLICY.grants if g.name == "writers")})
    assert grantable(writers_only, Identity("https://i", "u", {"groups": ["dev"]}))[0].approval is True


@pytest.mark.parametrize(
    ("identity", "names"),
    [
        (Identity("https://i", "repo:acme/x", {}), ["cohere-prod", "jina-prod"]),
        (Identity("https://i", "repo:evil/x", {}), []),
        (Identity("https://other", "u", {"groups": ["ops"]}), []),  # ops of another issuer is nobody here
        (Identity("https://i", "u", {"groups": ["dev", "ops"]}), sorted(POLICY.connections)),
    ],
)
def test_only_what_the_identity_may_get(identity: Identity, names: list[str]) -> None:
    assert _names(identity) == names
    for name in POLICY.connections:  # the listing agrees with the mint's decision, connection by connection
        if name in names:
            evaluate_grants(POLICY, identity, TokenRequest(name))
        else:
            with pytest.raises(NotGranted):
                evaluate_grants(POLICY, identity, TokenRequest(name))


def test_not_granted_names_the_connection() -> None:
    with pytest.raises(NotGranted) as info:
        evaluate_grants(POLICY, Identity("https://i", "repo:evil/x", {}), TokenRequest("jina-prod"))
    assert "'jina-prod'" in info.value.message and "identity" not in info.value.message


@pytest.mark.parametrize(
    ("typed", "names", "close"),
    [
        ("cohere", ["cohere-prod", "cohere-staging", "jina-prod"], ["cohere-prod", "cohere-staging"]),
        ("cohere-prd", ["cohere-prod", "jina-prod"], ["cohere-prod"]),
        ("JINA-PROD", ["cohere-prod", "jina-prod"], ["jina-prod"]),
        ("voyage", ["cohere-prod", "jina-prod"], []),
        ("x", [], []),
    ],
)
def test_close_names(typed: str, names: list[str], close: list[str]) -> None:
    assert close_names(typed, names) == close


def test_dialect_for_host_only_when_every_connection_of_the_host_agrees() -> None:
    assert POLICY.dialect_for_host("API.cohere.com.") == "cohere"
    assert POLICY.dialect_for_host("api.jina.ai") == "jina"
    assert POLICY.dialect_for_host("nowhere.example") is None
    mixed = parse_policy("""
version: 1
issuers: [{issuer: "https://i", audience: jitgate}]
connections:
  a: {dialect: cohere, upstream: "https://shared.example", credential: {secret_id: s/a}}
  b: {dialect: voyage, upstream: "https://shared.example", credential: {secret_id: s/b}}
""")
    assert mixed.dialect_for_host("shared.example") is None
