from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from jitgate.approval_store import ApprovalStore, Conflict
from jitgate.approvals import RETAIN, Approval, close, decide, new_id, state_at
from jitgate.errors import AlreadyVoted, ApprovalUnavailable, NotFound
from jitgate.policy import Approvers, Identity, Principal

NOW = 1_800_000_000.0
TABLE = "jitgate-state-test"


def _who(sub: str) -> Identity:
    return Identity("https://oidc.test", sub, {"groups": ["search-leads"]})


@pytest.fixture
def ddb() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName=TABLE,
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield client


def _approval(kind: str = "issuance", count: int = 2, ttl: float = 3600) -> Approval:
    return Approval(
        id=new_id(kind),  # type: ignore[arg-type]
        kind=kind,  # type: ignore[arg-type]
        requester="janitor",
        connection="store-test",
        approvers=Approvers(members=(Principal(issuer="https://oidc.test", group="search-leads"),), count=count),
        created_at=NOW,
        expires_at=NOW + ttl,
    )


def test_create_get_and_create_twice_conflicts(ddb: Any) -> None:
    store = ApprovalStore(ddb, TABLE)
    a = _approval()
    store.create(a, now=NOW)
    assert store.get(a.id, now=NOW) == (a, 1)
    with pytest.raises(Conflict):
        store.create(a, now=NOW)
    assert store.get(new_id("issuance"), now=NOW) is None


def test_put_is_conditional_on_the_version_read(ddb: Any) -> None:
    store = ApprovalStore(ddb, TABLE)
    a = _approval()
    store.create(a, now=NOW)
    voted = decide(a, _who("alice"), "approve", "ok", now=NOW)
    assert store.put(voted, version=1, now=NOW) == 2
    stale = decide(a, _who("bob"), "approve", "ok", now=NOW)
    with pytest.raises(Conflict):
        store.put(stale, version=1, now=NOW)  # would drop alice's vote
    assert store.get(a.id, now=NOW) == (voted, 2)


def test_concurrent_votes_both_count(ddb: Any) -> None:
    """Bob's vote lands between alice's read and write; alice's write retries on the new state."""
    store = ApprovalStore(ddb, TABLE)
    a = _approval(count=2)
    store.create(a, now=NOW)
    interfered = []

    def alice_step(current: Approval) -> Approval:
        if not interfered:
            interfered.append(True)
            store.update(a.id, lambda x: decide(x, _who("bob"), "approve", "ok", now=NOW), now=lambda: NOW)
        return decide(current, _who("alice"), "approve", "ok", now=NOW)

    before, _after = store.update(a.id, alice_step, now=lambda: NOW)
    assert [v.approver for v in before.votes] == ["bob"]
    stored, version = store.get(a.id, now=NOW) or (None, 0)
    assert stored is not None and version == 3
    assert {v.approver for v in stored.votes} == {"alice", "bob"}
    assert state_at(stored, NOW) == "approved"


def test_a_hold_closed_by_timeout_cannot_be_approved_and_vice_versa(ddb: Any) -> None:
    store = ApprovalStore(ddb, TABLE)
    hold = _approval("hold", count=1, ttl=120)
    store.create(hold, now=NOW)
    store.update(hold.id, lambda x: close(x, "expired", now=NOW), now=lambda: NOW)
    with pytest.raises(Exception) as err:
        store.update(hold.id, lambda x: decide(x, _who("alice"), "approve", "ok", now=NOW + 1), now=lambda: NOW + 1)
    assert getattr(err.value, "code", None) in {"approval_expired", "approval_closed"}

    other = _approval("hold", count=1, ttl=120)
    store.create(other, now=NOW)
    store.update(other.id, lambda x: decide(x, _who("alice"), "approve", "ok", now=NOW), now=lambda: NOW)
    with pytest.raises(Exception) as err2:
        store.update(other.id, lambda x: close(x, "expired", now=NOW + 1), now=lambda: NOW + 1)
    assert getattr(err2.value, "code", None) == "approval_closed"


def test_step_errors_pass_through_unchanged(ddb: Any) -> None:
    store = ApprovalStore(ddb, TABLE)
    a = _approval()
    store.create(a, now=NOW)
    store.update(a.id, lambda x: decide(x, _who("alice"), "approve", "ok", now=NOW), now=lambda: NOW)
    with pytest.raises(AlreadyVoted):
        store.update(a.id, lambda x: decide(x, _who("alice"), "approve", "again", now=NOW), now=lambda: NOW)
    with pytest.raises(NotFound):
        store.update(new_id("issuance"), lambda x: x, now=lambda: NOW)


def test_scan_and_get_many_see_live_items_of_their_kind(ddb: Any) -> None:
    store = ApprovalStore(ddb, TABLE)
    issuance = [_approval("issuance") for _ in range(3)]
    holds = [_approval("hold", ttl=120) for _ in range(2)]
    for a in issuance + holds:
        store.create(a, now=NOW)
    assert {a.id for a, _ in store.scan(["issuance"], now=NOW)} == {a.id for a in issuance}
    assert {a.id for a, _ in store.scan(now=NOW)} == {a.id for a in issuance + holds}
    got = store.get_many([h.id for h in holds] + [new_id("hold")], now=NOW)
    assert set(got) == {h.id for h in holds}
    # Past retention the items are gone for readers even though moto never deletes them.
    later = NOW + 3600 + RETAIN + 1
    assert store.scan(now=later) == []
    assert store.get_many([h.id for h in holds], now=later) == {}
    assert store.get(issuance[0].id, now=later) is None


def test_unreachable_table_is_unavailable_not_missing(ddb: Any) -> None:
    store = ApprovalStore(ddb, "no-such-table")
    with pytest.raises(ApprovalUnavailable):
        store.get(new_id("hold"), now=NOW)
    with pytest.raises(ApprovalUnavailable):
        store.create(_approval(), now=NOW)
    with pytest.raises(ApprovalUnavailable):
        store.get_many([new_id("hold")], now=NOW)
