from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jitgate.approvals import (
    RETAIN,
    Approval,
    RequestFacts,
    close,
    collect_by,
    decide,
    from_item,
    hold_approvers,
    hold_summary,
    is_approver,
    item_expired,
    kind_of,
    may_decide,
    new_id,
    pk_for,
    risk_reasons,
    state_at,
    to_item,
    view,
)
from jitgate.errors import (
    AlreadyVoted,
    ApprovalClosed,
    ApprovalExpired,
    BadRequest,
    JitgateError,
    NotAnApprover,
    SelfApproval,
)
from jitgate.policy import ApprovalRules, Approvers, Identity, Principal, parse_policy
from jitgate.records import Finding
from jitgate.state import APPROVAL_PK, HOLD_PK

NOW = 1_800_000_000.0
ISS = "https://oidc.test"
REQUESTER = "system:serviceaccount:ranking-admin:janitor"


def _who(sub: str, *groups: str, issuer: str = ISS) -> Identity:
    return Identity(issuer, sub, {"groups": list(groups)})


def _group(name: str) -> Principal:
    return Principal(issuer=ISS, group=name)


def _sub(name: str) -> Principal:
    return Principal(issuer=ISS, sub=name)


LEAD_A = _who("alice", "search-leads")
LEAD_B = _who("bob", "search-leads")
LEAD_C = _who("carol", "search-leads")
OUTSIDER = _who("mallory", "interns")
NAMED = _who("dave")


def _approval(count: int = 1, *, ttl: float = 3600, **over: Any) -> Approval:
    base: dict[str, Any] = {
        "id": new_id("issuance"),
        "kind": "issuance",
        "requester": REQUESTER,
        "connection": "store-test",
        "approvers": Approvers(members=(_group("search-leads"), _sub("dave")), count=count),
        "created_at": NOW,
        "expires_at": NOW + ttl,
    }
    base.update(over)
    return Approval(**base)


def test_new_approval_is_pending_until_it_expires() -> None:
    a = _approval(ttl=60)
    assert state_at(a, NOW) == "pending"
    assert state_at(a, NOW + 59.9) == "pending"
    assert state_at(a, NOW + 60) == "expired"


@pytest.mark.parametrize(
    ("count", "voters", "expected"),
    [
        (1, [LEAD_A], "approved"),
        (2, [LEAD_A], "pending"),
        (2, [LEAD_A, LEAD_B], "approved"),
        (2, [LEAD_A, NAMED], "approved"),
        (3, [LEAD_A, LEAD_B], "pending"),
        (3, [LEAD_A, LEAD_B, LEAD_C], "approved"),
    ],
)
def test_n_of_m_counts_distinct_approvers(count: int, voters: list[Identity], expected: str) -> None:
    a = _approval(count)
    for i, who in enumerate(voters):
        a = decide(a, who, "approve", "looks fine", now=NOW + i)
    assert state_at(a, NOW + 10) == expected


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("approvals_before", [0, 1])
def test_one_denial_denies(count: int, approvals_before: int) -> None:
    a = _approval(count)
    if approvals_before and count > 1:
        a = decide(a, LEAD_A, "approve", "ok", now=NOW)
    a = decide(a, LEAD_B, "deny", "too broad", now=NOW + 1)
    assert state_at(a, NOW + 2) == "denied"
    with pytest.raises(ApprovalClosed):
        decide(a, LEAD_C, "approve", "late", now=NOW + 3)


@pytest.mark.parametrize("verdict", ["approve", "deny"])
def test_requester_never_decides_even_when_in_the_group(verdict: str) -> None:
    requester_in_group = _who(REQUESTER, "search-leads")
    a = _approval()
    with pytest.raises(SelfApproval):
        decide(a, requester_in_group, verdict, "mine", now=NOW)  # type: ignore[arg-type]
    assert not may_decide(a, requester_in_group, NOW)


@pytest.mark.parametrize("verdict", ["approve", "deny"])
def test_outsider_cannot_decide(verdict: str) -> None:
    a = _approval()
    with pytest.raises(NotAnApprover):
        decide(a, OUTSIDER, verdict, "why not", now=NOW)  # type: ignore[arg-type]
    assert not may_decide(a, OUTSIDER, NOW)


OTHER_ISSUER = "https://partner.test"


@pytest.mark.parametrize(
    "impostor",
    [_who("mallory", "search-leads", issuer=OTHER_ISSUER), _who("dave", issuer=OTHER_ISSUER)],
    ids=["the_group", "the_subject"],
)
@pytest.mark.parametrize("verdict", ["approve", "deny"])
def test_another_issuers_group_or_subject_is_no_approver(impostor: Identity, verdict: str) -> None:
    """Groups and subjects are the claims of their issuer: the same names from another are nobody (issue 17)."""
    a = _approval()
    assert not is_approver(a, impostor) and not may_decide(a, impostor, NOW)
    with pytest.raises(NotAnApprover):
        decide(a, impostor, verdict, "looks fine", now=NOW)  # type: ignore[arg-type]
    assert is_approver(a, LEAD_A) and is_approver(a, NAMED)  # the control: the same names of ISS


def test_same_approver_counts_once() -> None:
    a = decide(_approval(2), LEAD_A, "approve", "ok", now=NOW)
    with pytest.raises(AlreadyVoted):
        decide(a, LEAD_A, "approve", "again", now=NOW + 1)
    assert not may_decide(a, LEAD_A, NOW + 1)
    assert may_decide(a, LEAD_B, NOW + 1)


@pytest.mark.parametrize("verdict", ["approve", "deny"])
def test_expired_takes_no_votes(verdict: str) -> None:
    a = _approval(ttl=10)
    with pytest.raises(ApprovalExpired):
        decide(a, LEAD_A, verdict, "late", now=NOW + 10)  # type: ignore[arg-type]
    assert not may_decide(a, LEAD_A, NOW + 10)


def test_approved_stays_approved_after_the_request_window() -> None:
    a = decide(_approval(ttl=10), LEAD_A, "approve", "ok", now=NOW + 5)
    assert state_at(a, NOW + 10_000) == "approved"


@pytest.mark.parametrize("reason", ["", "   ", "x" * 501])
def test_reason_is_required_and_bounded(reason: str) -> None:
    with pytest.raises(BadRequest):
        decide(_approval(), LEAD_A, "approve", reason, now=NOW)


def test_close_ends_an_undecided_approval_once() -> None:
    a = _approval(ttl=60)
    closed = close(a, "expired", now=NOW)
    assert state_at(closed, NOW) == "expired"
    with pytest.raises(ApprovalClosed):
        close(closed, "expired", now=NOW + 1)
    assert state_at(close(a, "expired", now=NOW + 61), NOW + 61) == "expired"  # window passed, not yet closed
    approved = decide(a, LEAD_A, "approve", "ok", now=NOW)
    with pytest.raises(ApprovalClosed):
        close(approved, "expired", now=NOW + 1)
    denied = decide(a, LEAD_A, "deny", "no", now=NOW)
    with pytest.raises(ApprovalClosed):
        close(denied, "expired", now=NOW + 1)


@pytest.mark.parametrize("kind", ["issuance", "hold"])
def test_ids_name_their_kind_and_partition(kind: str) -> None:
    approval_id = new_id(kind)  # type: ignore[arg-type]
    assert kind_of(approval_id) == kind
    assert pk_for(approval_id) == (HOLD_PK if kind == "hold" else APPROVAL_PK)
    assert new_id(kind) != approval_id  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "apv-", "apv-xyz", "hold-" + "g" * 32, "../apv-" + "0" * 32, "APV-" + "0" * 32])
def test_kind_of_rejects_anything_else(bad: str) -> None:
    assert kind_of(bad) is None


@pytest.mark.parametrize("votes", [[], [("alice", "approve")], [("alice", "approve"), ("bob", "deny")]])
def test_item_round_trip(votes: list[tuple[str, str]]) -> None:
    a = _approval(2, summary={"operation": "delete"}, request={"grant": "store-maintenance", "ttl": 600})
    for i, (sub, verdict) in enumerate(votes):
        a = decide(a, _who(sub, "search-leads"), verdict, f"reason {i}", now=NOW + i)  # type: ignore[arg-type]
    item = to_item(a, version=7, now=NOW + 5)
    back, version = from_item(item)
    assert version == 7
    assert back == a
    assert item["state"]["S"] == state_at(a, NOW + 5)
    assert item["pk"]["S"] == APPROVAL_PK and item["sk"]["S"] == a.id


def test_items_stay_readable_past_their_window_then_expire() -> None:
    a = _approval(ttl=60)
    item = to_item(a, version=1, now=NOW)
    assert not item_expired(item, NOW + 61)  # still readable as `expired`
    assert item_expired(item, NOW + 60 + RETAIN)
    approved = decide(a, LEAD_A, "approve", "ok", now=NOW + 30)
    assert not item_expired(to_item(approved, version=2, now=NOW + 30), NOW + 3600)


@pytest.mark.parametrize(
    "item",
    [
        {},
        {"doc": {"S": "not json"}, "version": {"N": "1"}},
        {"doc": {"S": "{}"}, "version": {"N": "1"}},
    ],
)
def test_from_item_rejects_malformed(item: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        from_item(item)


def test_view_has_counts_and_no_request_internals() -> None:
    a = decide(_approval(2, request={"grant": "g"}), LEAD_A, "approve", "ok", now=NOW)
    v = view(a, NOW + 1)
    assert v["state"] == "pending" and v["approvals"] == 1 and v["required"] == 2
    assert v["votes"][0]["approver"] == "alice"
    assert "request" not in v


@pytest.mark.parametrize(
    ("rules", "facts", "expected"),
    [
        (ApprovalRules(), RequestFacts("delete", None, 10), ()),
        (ApprovalRules(operations=("delete",)), RequestFacts("delete", None, 10), ("operation:delete",)),
        (ApprovalRules(operations=("delete",)), RequestFacts("query", None, 10), ()),
        (ApprovalRules(max_documents=1000), RequestFacts("rerank", 1000, 10), ()),
        (ApprovalRules(max_documents=1000), RequestFacts("rerank", 1001, 10), ("documents:1001>1000",)),
        (ApprovalRules(max_documents=5), RequestFacts("rerank", None, 10), ()),
        (ApprovalRules(max_bytes=100), RequestFacts("rerank", 3, 100), ()),
        (ApprovalRules(max_bytes=100), RequestFacts("rerank", 3, 101), ("bytes:101>100",)),
        (
            ApprovalRules(),
            RequestFacts("rerank", 3, 10, (Finding(type="email", location="body", action="review"),)),
            ("finding:email",),
        ),
        (
            ApprovalRules(),
            RequestFacts("rerank", 3, 10, (Finding(type="email", location="body", action="mask"),)),
            (),
        ),
        (
            ApprovalRules(operations=("upsert",), max_documents=2, max_bytes=5),
            RequestFacts(
                "upsert",
                3,
                6,
                (
                    Finding(type="ssn", location="body", action="review"),
                    Finding(type="email", location="body", action="review"),
                    Finding(type="email", location="query", action="review"),
                ),
            ),
            ("operation:upsert", "documents:3>2", "bytes:6>5", "finding:email", "finding:ssn"),
        ),
    ],
)
def test_risk_reasons(rules: ApprovalRules, facts: RequestFacts, expected: tuple[str, ...]) -> None:
    assert risk_reasons(rules, facts) == expected


def test_hold_summary_drops_query_string_and_finding_values() -> None:
    facts = RequestFacts("rerank", 2000, 123_456, (Finding(type="aws_key", location="body", action="review",
                                                           tag="secret-looking", offset=4, length=20),))
    s = hold_summary(sub="ci", jti="j" * 32, job="nightly", connection="cohere-test", facts=facts, method="POST",
                     host="api.example", path="/v2/rerank?api_key=abc", reasons=("documents:2000>1000",))
    assert s["path"] == "/v2/rerank"
    assert s["findings"] == [{"type": "aws_key", "where": "body", "action": "review"}]
    assert "abc" not in str(s) and "secret-looking" not in str(s)
    assert (s["bytes"], s["documents"], s["jti"]) == (123_456, 2000, "j" * 32)


_POLICY = """
version: 1
issuers: [{issuer: https://oidc.test, audience: jitgate}]
admins: [{group: platform-security}, {sub: root}]
connections:
  plain:
    dialect: cohere
    upstream: https://plain.test
    credential: {secret_id: s1}
  guarded:
    dialect: chroma
    upstream: https://guarded.test
    credential: {secret_id: s2}
    approval:
      operations: [delete]
      approvers: {count: 2, members: [{group: search-leads}]}
"""


def test_hold_approvers_come_from_the_connection_else_the_admins() -> None:
    policy = parse_policy(_POLICY)
    expected = Approvers(members=(_group("search-leads"),), count=2)
    assert hold_approvers(policy, policy.connections["guarded"]) == expected
    admins = hold_approvers(policy, policy.connections["plain"])
    assert admins.members == (_group("platform-security"), _sub("root")) and admins.count == 1


_PEOPLE = ["alice", "bob", "carol", "dave", "mallory", REQUESTER]
_GROUPS = {"alice": ["search-leads"], "bob": ["search-leads"], "carol": ["search-leads"], "dave": [],
           "mallory": ["interns"], REQUESTER: ["search-leads"]}


@settings(max_examples=300, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=4),
    steps=st.lists(
        st.tuples(st.sampled_from(_PEOPLE), st.sampled_from(["approve", "deny"]), st.floats(0, 7200)),
        max_size=12,
    ),
)
def test_state_machine_invariants(count: int, steps: list[tuple[str, str, float]]) -> None:
    """Whatever votes arrive, in whatever order and at whatever time, the rules hold."""
    a = _approval(count)
    for sub, verdict, offset in sorted(steps, key=lambda s: s[2]):
        try:
            a = decide(a, _who(sub, *_GROUPS[sub]), verdict, "r", now=NOW + offset)  # type: ignore[arg-type]
        except JitgateError:
            continue
    approvers = [v.approver for v in a.votes if v.verdict == "approve"]
    assert REQUESTER not in {v.approver for v in a.votes} and "mallory" not in {v.approver for v in a.votes}
    assert len(approvers) == len(set(approvers))  # one vote per approver
    assert all(v.at < a.expires_at for v in a.votes)  # nothing lands after the window
    assert sum(v.verdict == "deny" for v in a.votes) <= 1  # a denial closes the approval
    final = state_at(a, NOW + 7200)
    if any(v.verdict == "deny" for v in a.votes):
        assert final == "denied"
    elif len(approvers) >= count:
        assert final == "approved" and len(approvers) == count  # no vote after approval
    else:
        assert final == "expired"


@pytest.mark.parametrize(("approve_at", "expected"), [([], NOW + 60), ([10.0], NOW + 70), ([10.0, 50.0], NOW + 110)])
def test_collect_by_is_one_window_after_the_last_approval(approve_at: list[float], expected: float) -> None:
    a = _approval(len(approve_at) or 1, ttl=60)
    for who, offset in zip((LEAD_A, LEAD_B), approve_at, strict=False):
        a = decide(a, who, "approve", "ok", now=NOW + offset)
    assert collect_by(a) == expected
