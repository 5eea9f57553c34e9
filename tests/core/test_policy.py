"""Policy validation (field and line named) and grants evaluation, parametrized hard."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from jitgate.devstack.policy import PG_CONNECTION, policy_dict
from jitgate.errors import BadRequest, NotGranted, PolicyError, UnknownConnection
from jitgate.policy import (
    Connection,
    Identity,
    Policy,
    TokenRequest,
    evaluate_grants,
    is_admin,
    load_policy,
    parse_policy,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "infra" / "policy.example.yaml"
GH = "https://token.actions.githubusercontent.com"
EKS = "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE"
SSO = "https://sso.example.com"


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(EXAMPLE)


def _ci(repo: str = "acme/search-ranker", ref: str = "refs/heads/main", **claims: Any) -> Identity:
    return Identity(GH, f"repo:{repo}:ref:{ref}", {"repository": repo, "ref": ref, **claims})


def _sa(namespace: str, name: str = "worker", **claims: Any) -> Identity:
    return Identity(EKS, f"system:serviceaccount:{namespace}:{name}", claims)


# -- loading and validation -------------------------------------------------------------------


def test_example_policy_loads(policy: Policy) -> None:
    assert set(policy.connections) == {"cohere-prod", "candidates-store", "chroma-cloud", "candidates-db"}
    assert [g.name for g in policy.grants] == ["rerank-ci", "store-readers", "cloud-readers", "store-maintenance"]
    cloud = policy.grants[2]
    assert (cloud.tenant, cloud.database) == ("acme-search", "production")
    assert policy.connections["chroma-cloud"].credential.header == "X-Chroma-Token"
    assert policy.grants[0].max_ttl == 1800 and policy.grants[0].default_ttl == 600
    assert policy.connection_for_host("API.cohere.com.") is policy.connections["cohere-prod"]
    assert policy.connection_for_host("evil.example") is None


def _line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing `needle`."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _mutate(old: str, new: str) -> str:
    text = EXAMPLE.read_text()
    assert old in text, old
    return text.replace(old, new, 1)


# (description, old text in the example, new text, needle on the line the error must name, words in the message)
LINE_CASES = [
    ("bad dialect", "dialect: cohere", "dialect: openai", "dialect: openai", ["connections.cohere-prod.dialect"]),
    ("format without placeholder", 'format: "Bearer {secret}"', 'format: "Bearer"', 'format: "Bearer"',
     ["credential.format", "{secret}"]),
    ("upstream without scheme", "upstream: https://api.cohere.com", "upstream: api.cohere.com",
     "upstream: api.cohere.com", ["upstream"]),
    ("unknown field in a connection", "    key_env: CHROMA_API_KEY", "    key_env: CHROMA_API_KEY\n    colour: red",
     "colour: red", ["colour", "Extra inputs"]),
    ("negative limit", "limits: {max_requests: 10000}", "limits: {max_requests: -1}", "max_requests: -1",
     ["limits.max_requests"]),
    ("bad duration", "max_ttl: 15m", "max_ttl: 15 minutes", "max_ttl: 15 minutes", ["max_ttl", "invalid duration"]),
    ("uppercase grant name", "name: store-readers", "name: Store-Readers", "name: Store-Readers", ["grants.1.name"]),
    ("bad approval count", "count: 2", "count: 0", "count: 0", ["approvers.count"]),
    ("bad profile action", "request_pii: block", "request_pii: shout", "request_pii: shout",
     ["profiles.strict.request_pii"]),
    ("unknown algorithm", "    audience: jitgate\n  - issuer",
     "    audience: jitgate\n    algorithms: [HS256]\n  - issuer", "algorithms: [HS256]", ["issuers.0.algorithms"]),
    ("wrong version", "version: 1", "version: 2", "version: 2", ["version"]),
    ("host with a scheme", "hosts: [api.cohere.com, api.cohere.ai]", "hosts: [api.cohere.com, https://api.cohere.ai]",
     "hosts: [api.cohere.com, https://api.cohere.ai]", ["connections.cohere-prod.hosts.1", "not a host name"]),
    ("host with a port", "hosts: [api.cohere.com, api.cohere.ai]",
     "hosts:\n      - api.cohere.com\n      - api.cohere.ai:443", "- api.cohere.ai:443", ["hosts.1", "not a host"]),
    ("wildcard host", "hosts: [api.cohere.com, api.cohere.ai]", "hosts:\n      - '*.cohere.com'",
     "- '*.cohere.com'", ["hosts.0", "not a host name"]),
    ("empty host", "hosts: [api.cohere.com, api.cohere.ai]", "hosts:\n      - api.cohere.com\n      - ''",
     "- ''", ["hosts.1", "not a host name"]),
]


@pytest.mark.parametrize(("old", "new", "needle", "words"), [c[1:] for c in LINE_CASES], ids=[c[0] for c in LINE_CASES])
def test_invalid_field_names_field_and_line(old: str, new: str, needle: str, words: list[str]) -> None:
    text = _mutate(old, new)
    with pytest.raises(PolicyError) as err:
        parse_policy(text, source="p.yaml")
    message = err.value.message
    assert f"p.yaml: line {_line_of(text, needle)}:" in message, message
    for word in words:
        assert word in message, message
    assert err.value.code == "policy_invalid"


# Cross-reference errors: the message names the offending item.
REFERENCE_CASES = [
    ("grant names an unknown connection", "connections: [cohere-prod]", "connections: [cohere-staging]",
     "unknown connection 'cohere-staging'"),
    ("grant names an unknown issuer",
     "      issuer: https://token.actions.githubusercontent.com\n      claims:\n        repo",
     "      issuer: https://gitlab.example.com\n      claims:\n        repo", "is not in issuers"),
    ("operation the connection lacks", "operations: [rerank]", "operations: [rerank, embed]",
     "has no operations ['embed']"),
    ("default over max", "default_ttl: 10m", "default_ttl: 1h", "default_ttl exceeds max_ttl"),
    ("approval without approvers",
     '        count: 2\n        members: [{issuer: "https://sso.example.com", group: search-leads}]',
     "        count: 2", "needs approvers"),
    ("unknown mask profile", "mask: strict", "mask: paranoid", "unknown mask profile 'paranoid'"),
    ("approval of unknown operation", "operations: [delete, drop_collection]", "operations: [delete, truncate]",
     "unknown operations ['truncate']"),
    ("duplicate grant", "name: store-maintenance", "name: store-readers", "defined twice"),
]


@pytest.mark.parametrize(("old", "new", "words"), [c[1:] for c in REFERENCE_CASES], ids=[c[0] for c in REFERENCE_CASES])
def test_invalid_references(old: str, new: str, words: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(_mutate(old, new), source="p.yaml")
    assert re.search(r"p\.yaml: line \d+: ", err.value.message)
    assert words in err.value.message


BAD_YAML = [
    ("unclosed flow list", "version: 1\nissuers: [\n", 3),
    ("tab indentation", "version: 1\nissuers:\n\t- issuer: x\n", 3),
    ("bad mapping", "version: 1\nconnections:\n  a: b\n c: d\n", 4),
    ("unterminated quote", 'version: 1\nissuers:\n  - issuer: "x\n', 4),
]


@pytest.mark.parametrize(("text", "line"), [c[1:] for c in BAD_YAML], ids=[c[0] for c in BAD_YAML])
def test_bad_yaml_names_the_line(text: str, line: int) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(text, source="p.yaml")
    assert err.value.message.startswith(f"p.yaml: line {line}: "), err.value.message


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n", "42\n"])
def test_policy_must_be_a_mapping(text: str) -> None:
    with pytest.raises(PolicyError, match="must be a mapping"):
        parse_policy(text)


def test_missing_required_sections_point_at_the_mapping() -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy("version: 1\nadmins: [{group: x}]\n", source="p.yaml")
    assert "issuers: Field required" in err.value.message and "connections: Field required" in err.value.message


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read policy"):
        load_policy(tmp_path / "missing.yaml")


def test_errors_never_echo_yaml_anchors_or_objects() -> None:
    # Safe loading: python object tags are a YAML error, never executed.
    with pytest.raises(PolicyError):
        parse_policy("version: !!python/object/apply:os.system ['true']\n")


def test_every_round_trip_of_the_example_is_stable(policy: Policy) -> None:
    again = parse_policy(yaml.safe_dump(yaml.safe_load(EXAMPLE.read_text())))
    assert again == policy


# -- grants evaluation ------------------------------------------------------------------------


GRANT_CASES: list[tuple[str, Identity, TokenRequest, dict[str, Any]]] = [
    ("ci default ttl", _ci(), TokenRequest("cohere-prod"),
     {"grant": "rerank-ci", "operations": ("rerank",), "ttl": 600, "clamped": False, "mask": "default"}),
    ("ci explicit ttl", _ci(), TokenRequest("cohere-prod", ttl=60), {"ttl": 60, "clamped": False}),
    ("ci ttl at max", _ci(), TokenRequest("cohere-prod", ttl=1800), {"ttl": 1800, "clamped": False}),
    ("ci ttl clamped", _ci(), TokenRequest("cohere-prod", ttl=7200), {"ttl": 1800, "clamped": True}),
    ("ci named operation", _ci(), TokenRequest("cohere-prod", operations=("rerank",)), {"operations": ("rerank",)}),
    ("ci glob repo", _ci("acme/search-x"), TokenRequest("cohere-prod"), {"grant": "rerank-ci"}),
    ("ci limits", _ci(), TokenRequest("cohere-prod"),
     {"limits.max_requests": 5000, "limits.max_documents": 1000, "limits.max_bytes": 4194304}),
    ("reader default", _sa("ranking"), TokenRequest("candidates-store"),
     {"grant": "store-readers", "operations": ("get", "query"), "collections": ("candidates",), "mask": "strict",
      "ttl": 900, "fields": ("ids", "documents", "distances", "metadatas")}),
    ("reader subset", _sa("ranking"), TokenRequest("candidates-store", operations=("query",)),
     {"operations": ("query",)}),
    ("maintainer delete needs approval", _sa("ranking-admin"), TokenRequest("candidates-store", operations=("delete",)),
     {"grant": "store-maintenance", "approval.required": True, "ttl": 900, "clamped": False}),
]


@pytest.mark.parametrize(("identity", "request_", "expected"), [c[1:] for c in GRANT_CASES],
                         ids=[c[0] for c in GRANT_CASES])
def test_grants_allow(policy: Policy, identity: Identity, request_: TokenRequest, expected: dict[str, Any]) -> None:
    decision = evaluate_grants(policy, identity, request_)
    for path, value in expected.items():
        got: Any = decision
        for part in path.split("."):
            got = getattr(got, part)
        assert got == value, path


@pytest.mark.parametrize(
    ("identity", "request_", "default_ttl", "ttl", "clamped"),
    [
        # store-maintenance: max_ttl 1h, no default_ttl, so the broker's default applies, capped at the max.
        (_sa("ranking-admin"), TokenRequest("candidates-store"), 300, 300, False),
        (_sa("ranking-admin"), TokenRequest("candidates-store"), 7200, 3600, False),
        (_sa("ranking-admin"), TokenRequest("candidates-store", ttl=120), 300, 120, False),
        # rerank-ci has default_ttl 10m: the broker's default does not apply.
        (_ci(), TokenRequest("cohere-prod"), 60, 600, False),
    ],
    ids=["broker default", "broker default over max", "requested wins", "grant default wins"],
)
def test_the_ttl_is_decided_once_with_the_brokers_default(
    policy: Policy, identity: Identity, request_: TokenRequest, default_ttl: int, ttl: int, clamped: bool
) -> None:
    decision = evaluate_grants(policy, identity, request_, default_ttl=default_ttl)
    assert (decision.ttl, decision.clamped) == (ttl, clamped)


DENY_CASES: list[tuple[str, Identity, TokenRequest, type[Exception]]] = [
    ("other repo", _ci("evil/search-ranker"), TokenRequest("cohere-prod"), NotGranted),
    ("glob is case-sensitive", _ci("ACME/search-ranker"), TokenRequest("cohere-prod"), NotGranted),
    ("other branch", _ci(ref="refs/heads/feature"), TokenRequest("cohere-prod"), NotGranted),
    ("claim missing", Identity(GH, "x", {"repository": "acme/search-ranker"}), TokenRequest("cohere-prod"), NotGranted),
    ("claim of wrong type", Identity(GH, "x", {"repository": {"a": 1}, "ref": "refs/heads/main"}),
     TokenRequest("cohere-prod"), NotGranted),
    ("issuer of another grant", _sa("ranking"), TokenRequest("cohere-prod"), NotGranted),
    ("untrusted issuer", Identity("https://evil.example", "repo:acme/search-ranker:ref:refs/heads/main",
                                  {"repository": "acme/search-ranker", "ref": "refs/heads/main"}),
     TokenRequest("cohere-prod"), NotGranted),
    ("ci on the store", _ci(), TokenRequest("candidates-store"), NotGranted),
    ("reader wants delete", _sa("ranking"), TokenRequest("candidates-store", operations=("delete",)), NotGranted),
    ("reader wants more than granted", _sa("ranking"), TokenRequest("candidates-store", operations=("query", "add")),
     NotGranted),
    ("namespace prefix is not a match", _sa("ranking-evil"), TokenRequest("candidates-store"), NotGranted),
    ("unknown connection", _ci(), TokenRequest("openai"), UnknownConnection),
    ("unknown operation", _ci(), TokenRequest("cohere-prod", operations=("embed",)), BadRequest),
    ("empty operations", _ci(), TokenRequest("cohere-prod", operations=()), BadRequest),
]


@pytest.mark.parametrize(("identity", "request_", "error"), [c[1:] for c in DENY_CASES], ids=[c[0] for c in DENY_CASES])
def test_grants_deny(policy: Policy, identity: Identity, request_: TokenRequest, error: type[Exception]) -> None:
    with pytest.raises(error):
        evaluate_grants(policy, identity, request_)


def test_first_matching_grant_wins_and_wildcards() -> None:
    text = """
version: 1
issuers: [{issuer: "https://i", audience: jitgate}]
profiles: {default: {}, loose: {request_pii: allow}}
connections:
  a: {dialect: cohere, upstream: "https://a.example", credential: {secret_id: s/a}}
  b: {dialect: jina, upstream: "https://b.example", credential: {secret_id: s/b}}
grants:
  - {name: narrow, match: {issuer: "https://i", claims: {groups: [ops]}}, connections: [a], max_ttl: 1m}
  - {name: wide, match: {issuer: "https://i"}, connections: ["*"], max_ttl: 1h, mask: loose}
"""
    policy = parse_policy(text)
    ops = Identity("https://i", "u", {"groups": ["dev", "ops"]})
    dev = Identity("https://i", "u", {"groups": ["dev"]})
    assert evaluate_grants(policy, ops, TokenRequest("a")).grant == "narrow"
    assert evaluate_grants(policy, ops, TokenRequest("a")).ttl == 60
    assert evaluate_grants(policy, dev, TokenRequest("a")).grant == "wide"
    assert evaluate_grants(policy, ops, TokenRequest("b")).mask == "loose"


@pytest.mark.parametrize(
    ("claims", "subject", "admin"),
    [({"groups": ["platform-security"]}, "x", True), ({"groups": ["dev"]}, "x", False), ({}, "x", False),
     ({"groups": "platform-security"}, "x", True), ({"groups": [["platform-security"]]}, "x", False)],
)
def test_admins(policy: Policy, claims: dict[str, Any], subject: str, admin: bool) -> None:
    assert is_admin(policy, Identity(SSO, subject, claims)) is admin


@pytest.mark.parametrize("issuer", [GH, EKS, "https://sso.example.com.evil"])
def test_an_admin_group_claimed_by_another_issuer_is_no_admin(policy: Policy, issuer: str) -> None:
    """The example's admins are SSO's platform-security group: GitHub or EKS saying so is nobody (issue 17)."""
    assert not is_admin(policy, Identity(issuer, "x", {"groups": ["platform-security"]}))


TWO_ISSUERS = """\
version: 1
issuers:
  - {issuer: "https://a.test", audience: jitgate}
  - {issuer: "https://b.test", audience: jitgate}
admins:
  - {issuer: "https://a.test", group: ops}
  - {issuer: "https://b.test", sub: root}
connections:
  c:
    dialect: cohere
    upstream: https://c.test
    credential: {secret_id: s}
    approval:
      max_documents: 3
      approvers:
        members:
          - {issuer: "https://a.test", group: leads}
"""


def test_entries_are_issuer_subject_and_issuer_group_pairs() -> None:
    policy = parse_policy(TWO_ISSUERS)
    assert is_admin(policy, Identity("https://a.test", "anyone", {"groups": ["ops"]}))
    assert not is_admin(policy, Identity("https://b.test", "anyone", {"groups": ["ops"]}))
    assert is_admin(policy, Identity("https://b.test", "root", {}))
    assert not is_admin(policy, Identity("https://a.test", "root", {}))
    (lead,) = policy.connections["c"].approval.approvers.members  # type: ignore[union-attr]
    assert (lead.issuer, lead.group, lead.sub) == ("https://a.test", "leads", None)


@pytest.mark.parametrize(
    ("old", "new", "line"),
    [
        ('  - {issuer: "https://b.test", sub: root}', "  - {sub: root}", 7),
        ('          - {issuer: "https://a.test", group: leads}', "          - {group: leads}", 17),
    ],
    ids=["admin", "approver"],
)
def test_with_several_issuers_an_entry_without_issuer_fails_naming_its_line(old: str, new: str, line: int) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(TWO_ISSUERS.replace(old, new), source="p.yaml")
    assert err.value.message.startswith(f"p.yaml: line {line}: "), err.value.message
    assert "names no issuer" in err.value.message


def test_with_one_issuer_an_entry_without_issuer_means_that_one() -> None:
    text = TWO_ISSUERS.replace('  - {issuer: "https://b.test", audience: jitgate}\n', "").replace(
        '  - {issuer: "https://b.test", sub: root}', "  - {sub: root}"
    ).replace('{issuer: "https://a.test", group: leads}', "{group: leads}")
    policy = parse_policy(text)
    assert [(p.issuer, p.sub) for p in policy.admins] == [("https://a.test", None), ("https://a.test", "root")]
    assert is_admin(policy, Identity("https://a.test", "root", {}))
    (lead,) = policy.connections["c"].approval.approvers.members  # type: ignore[union-attr]
    assert lead.issuer == "https://a.test"


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        ('  - {issuer: "https://a.test", group: ops}\n  - {issuer: "https://b.test", sub: root}',
         "  {groups: [ops]}", "admins are a list of entries"),
        ('        members:\n          - {issuer: "https://a.test", group: leads}', "        groups: [leads]",
         "approvers name `members`"),
        ('{issuer: "https://a.test", group: ops}', '{issuer: "https://a.test", group: ops, sub: x}',
         "either sub or group"),
        ('{issuer: "https://a.test", group: ops}', '{issuer: "https://a.test"}', "either sub or group"),
        ('{issuer: "https://b.test", sub: root}', '{issuer: "https://c.test", sub: root}',
         "issuer 'https://c.test' is not in issuers"),
    ],
    ids=["old_admins_form", "old_approvers_form", "sub_and_group", "neither", "unknown_issuer"],
)
def test_bad_admin_or_approver_entries_fail_to_load(old: str, new: str, words: str) -> None:
    assert old in TWO_ISSUERS
    with pytest.raises(PolicyError) as err:
        parse_policy(TWO_ISSUERS.replace(old, new), source="p.yaml")
    assert re.search(r"p\.yaml: line \d+: ", err.value.message) and words in err.value.message, err.value.message


@pytest.mark.parametrize(
    ("claims", "name", "values"),
    [({"a": "x"}, "a", ["x"]), ({"a": 7}, "a", ["7"]), ({"a": ["x", 1, None, {}]}, "a", ["x", "1"]),
     ({"a": None}, "a", []), ({}, "a", []), ({"sub": "spoof"}, "sub", ["real"])],
)
def test_identity_claim_values(claims: dict[str, Any], name: str, values: list[str]) -> None:
    assert Identity("https://i", "real", claims).values(name) == values


# -- shared hosts: the token's connection picks, the host alone does not -------------------------

SHARED = """
version: 1
issuers: [{issuer: https://oidc.test, audience: jitgate}]
profiles: {default: {}, strict: {request_pii: block}}
connections:
  cohere-a:
    dialect: cohere
    upstream: https://api.cohere.com
    credential: {secret_id: jitgate/cohere-a}
  cohere-b:
    dialect: cohere
    upstream: https://API.cohere.com:443/
    hosts: [api.cohere.ai]
    mask: strict
    credential: {secret_id: jitgate/cohere-b, header: X-Api-Key, format: "{secret}"}
  tei-staging:
    dialect: tei
    upstream: https://tei.internal:8080
    hosts: [rerank.internal]
    credential: {secret_id: jitgate/tei-staging}
  tei-prod:
    dialect: tei
    upstream: https://tei.internal:8080
    hosts: [rerank.internal]
    credential: {secret_id: jitgate/tei-prod}
  ipv6:
    dialect: tei
    upstream: https://[::1]:8443
    credential: {secret_id: jitgate/ipv6}
grants:
  - name: both-accounts
    match: {issuer: https://oidc.test}
    connections: [cohere-a, cohere-b]
    operations: [rerank]
"""


@pytest.fixture(scope="module")
def shared() -> Policy:
    return parse_policy(SHARED)


@pytest.mark.parametrize(
    ("host", "serving"),
    [
        ("api.cohere.com", ["cohere-a", "cohere-b"]),
        ("API.Cohere.COM.", ["cohere-a", "cohere-b"]),
        ("api.cohere.ai", ["cohere-b"]),
        ("rerank.internal", ["tei-staging", "tei-prod"]),
        ("tei.internal", ["tei-staging", "tei-prod"]),
        ("::1", ["ipv6"]),
        ("[::1]", ["ipv6"]),
        ("cohere.com", []),
        ("api.cohere.com.evil.example", []),
        ("", []),
    ],
)
def test_connections_for_host_lists_every_serving_connection(shared: Policy, host: str, serving: list[str]) -> None:
    assert [c.name for c in shared.connections_for_host(host)] == serving


@pytest.mark.parametrize(
    ("host", "conn", "picked"),
    [
        ("api.cohere.com", "cohere-a", "cohere-a"),
        ("api.cohere.com", "cohere-b", "cohere-b"),
        ("api.cohere.ai", "cohere-b", "cohere-b"),
        ("api.cohere.ai", "cohere-a", None),  # a public name of B only: never A's
        ("rerank.internal", "tei-prod", "tei-prod"),
        ("rerank.internal", "tei-staging", "tei-staging"),
        ("api.cohere.com", "tei-prod", None),
        ("api.cohere.com", "no-such-connection", None),
        ("evil.example", "cohere-a", None),
        ("api.cohere.com", None, None),  # shared and unnamed: ambiguous, so nothing
        ("api.cohere.ai", None, "cohere-b"),  # served by one: that one
        ("evil.example", None, None),
    ],
)
def test_connection_for_host_prefers_the_named_connection(
    shared: Policy, host: str, conn: str | None, picked: str | None
) -> None:
    found = shared.connection_for_host(host, conn)
    assert (found.name if found is not None else None) == picked
    if found is not None:
        assert found is shared.connections[found.name]


def test_shared_hosts_keep_each_connections_own_settings(shared: Policy) -> None:
    a, b = shared.connections["cohere-a"], shared.connections["cohere-b"]
    assert a.upstream_host == b.upstream_host == "api.cohere.com"
    assert (a.credential.secret_id, a.mask) == ("jitgate/cohere-a", "default")
    assert (b.credential.secret_id, b.credential.header, b.mask) == ("jitgate/cohere-b", "X-Api-Key", "strict")
    assert shared.connections["ipv6"].upstream_host == "::1"


def test_shared_hosts_still_check_every_other_reference() -> None:
    bad = SHARED.replace("    mask: strict\n", "    mask: paranoid\n", 1)
    with pytest.raises(PolicyError) as err:
        parse_policy(bad, source="p.yaml")
    assert "unknown mask profile 'paranoid'" in err.value.message
    assert re.search(r"p\.yaml: line \d+: ", err.value.message)


@pytest.mark.parametrize(
    "host", ["api.cohere.com", "API.Cohere.com.", "chroma_store.internal", "10.0.0.7", "::1", "localhost"]
)
def test_valid_host_names(host: str) -> None:
    text = SHARED.replace("hosts: [api.cohere.ai]", f"hosts: [{json.dumps(host)}]", 1)
    assert parse_policy(text).connections["cohere-b"].hosts == (host,)


@pytest.mark.parametrize(
    "host", ["", " ", "https://api.cohere.com", "api.cohere.com:443", "*.cohere.com", "api.cohere.com/v2",
             "api cohere.com", "-api.cohere.com", "api..cohere.com", "a" * 64 + ".example", "user@api.cohere.com",
             "api.cohere.com\n", "api.cohere.com\nevil.example", ("a" * 60 + ".") * 4 + "a" * 10]
)
def test_invalid_host_names(host: str) -> None:
    text = SHARED.replace("hosts: [api.cohere.ai]", f"hosts: [{json.dumps(host)}]", 1)
    with pytest.raises(PolicyError) as err:
        parse_policy(text, source="p.yaml")
    line = _line_of(text, "hosts: [")
    assert f"p.yaml: line {line}: connections.cohere-b.hosts.0: " in err.value.message
    assert "not a host name" in err.value.message


# -- mask_columns (Postgres grants) ----------------------------------------------------------------


def _pg_policy(**grant: Any) -> str:
    doc: dict[str, Any] = policy_dict("https://issuer.example")
    doc["grants"].append(
        {"name": "pg-masked", "match": {"issuer": "https://issuer.example", "claims": {"sub": ["masked"]}},
         "connections": [PG_CONNECTION], "operations": ["select"], "collections": ["candidates"], **grant}
    )
    return yaml.safe_dump(doc, sort_keys=False)


def test_mask_columns_travel_from_the_grant_to_the_decision() -> None:
    names = ["owner_email", "candidates.body", "public.candidates.embedding"]
    policy = parse_policy(_pg_policy(mask_columns=names))
    decision = evaluate_grants(policy, Identity("https://issuer.example", "masked", {}), TokenRequest("pg-dev"))
    assert decision.mask_columns == tuple(names)


@pytest.mark.parametrize(
    ("grant", "words"),
    [
        ({"mask_columns": ["a.b.c.d"]}, "is not `column`, `table.column` or `schema.table.column`"),
        ({"mask_columns": ["Owner_Email"]}, "is not `column`"),  # unquoted names are folded: never upper case
        ({"mask_columns": ["owner email"]}, "is not `column`"),
        ({"mask_columns": ["x'; drop table t; --"]}, "is not `column`"),
        ({"mask_columns": ["ok"], "connections": ["chroma-dev"]}, "mask_columns apply to postgres connections only"),
    ],
)
def test_mask_columns_refused(grant: dict[str, Any], words: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(_pg_policy(**grant))
    assert words in err.value.message


@pytest.mark.parametrize(
    ("upstream", "port"),
    [
        ("https://api.cohere.com", 443),
        ("http://tei.internal", 80),
        ("http://tei.internal:8080", 8080),
        ("https://chroma.internal:8000", 8000),
        ("https://[fd00::1]", 443),
        ("https://[fd00::1]:9443", 9443),
    ],
)
def test_upstream_port(upstream: str, port: int) -> None:
    conn = Connection.model_validate({"name": "c", "dialect": "generic", "upstream": upstream,
                                      "credential": {"secret_id": "s"}})
    assert conn.upstream_port == port


def test_upstream_ports_are_what_the_egress_must_allow(policy: Policy) -> None:
    assert policy.upstream_ports == (443, 5432, 8000)
