"""jitgate.holds: what a gateway holds for a human and what ends a hold, without mitmproxy."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from jitgate import holds
from jitgate.approval_store import ApprovalStore
from jitgate.approvals import Approval, decide, risk_reasons, state_at
from jitgate.policy import Identity, Policy
from jitgate.records import Decision, Finding
from jitgate.token import Claims, new_jti

POLICY = Policy.model_validate({
    "version": 1, "issuers": [{"issuer": "https://oidc.test", "audience": "jitgate"}],
    "admins": [{"group": "platform-security"}],
    "connections": {"rerank": {
        "dialect": "cohere", "upstream": "https://api.cohere.test", "credential": {"secret_id": "jitgate/rerank"},
        "approval": {"max_documents": 3, "max_bytes": 4000},
    }},
})
CONN = POLICY.connections["rerank"]


def _claims(exp: int = 2_000_000_000) -> Claims:
    return Claims.model_validate(
        {"iss": "https://b.test", "aud": "jitgate", "sub": "janitor", "iat": 1, "nbf": 1, "exp": exp,
         "jti": new_jti(), "conn": "rerank", "scope": {"operations": ["rerank"]}, "limits": {}, "mask": "default"}
    )


def _body(n: int, pad: int = 0) -> dict[str, Any]:
    return {"query": "q", "documents": ["d" * pad] * n}


def test_facts_count_documents_only_when_a_rule_needs_them() -> None:
    raw = json.dumps(_body(4)).encode()
    asked: list[int] = []

    def body() -> Any:
        asked.append(1)
        return _body(4)

    facts = holds.request_facts(raw, "", CONN, "rerank", body, [Finding(type="email", location="q", action="review")])
    assert (facts.documents, facts.size, len(facts.findings), asked) == (4, len(raw), 1, [1])
    assert risk_reasons(CONN.approval, facts) == ("documents:4>3", "finding:email")
    assert holds.request_facts(raw, "", CONN, None, body, []).documents is None and asked == [1]


def test_the_size_is_the_decoded_one_and_a_bad_encoding_raises() -> None:
    plain = json.dumps(_body(1, pad=10_000)).encode()
    facts = holds.request_facts(gzip.compress(plain), "gzip", CONN, "rerank", lambda: _body(1), [])
    assert facts.size == len(plain) and risk_reasons(CONN.approval, facts) == (f"bytes:{len(plain)}>4000",)
    with pytest.raises(ValueError):
        holds.request_facts(b"not gzip", "gzip", CONN, "rerank", lambda: None, [])


def test_a_hold_carries_a_masked_summary_and_its_deadline() -> None:
    claims = _claims()
    facts = holds.request_facts(b"{}", "", CONN, "rerank", lambda: _body(4), [])
    hold = holds.new_hold(POLICY, CONN, claims, facts, ["documents:4>3"], method="POST", host="api.cohere.test",
                          path="/v2/rerank?key=secret", now=100.0, timeout=30.0, gateway="gw-1", flow_id="f1")
    assert hold.id.startswith("hold") and (hold.created_at, hold.expires_at) == (100.0, 130.0)
    assert hold.summary["jti"] == claims.jti and hold.summary["gateway"] == "gw-1" and hold.summary["flow"] == "f1"
    assert "secret" not in json.dumps(dict(hold.summary))
    subject, message = holds.hold_notice(hold)
    note = json.loads(message)
    assert subject == "jitgate: request held on rerank" and (note["id"], note["expires_at"]) == (hold.id, 130)


@pytest.mark.parametrize(
    ("state", "past", "result"),
    [("approved", True, "approved"), ("denied", False, "denied"), ("expired", False, "close"),
     ("pending", True, "close"), (None, True, "close"), ("pending", False, None), (None, False, None)],
)
def test_outcome_of_a_poll(state: Any, past: bool, result: Any) -> None:
    assert holds.outcome(state, past_deadline=past) == result


def test_an_approval_is_no_pass_for_a_revoked_expired_or_uncheckable_token() -> None:
    claims = _claims(exp=1000)
    assert holds.resume_error(claims, claims.jti, set(), now=999.0) is None
    assert holds.resume_error(claims, claims.jti, None, now=999.0).code == "revocation_unavailable"  # type: ignore[union-attr]
    assert holds.resume_error(claims, claims.jti, {claims.jti}, now=999.0).code == "token_revoked"  # type: ignore[union-attr]
    assert holds.resume_error(claims, claims.jti, set(), now=1000.0).code == "token_expired"  # type: ignore[union-attr]


def test_a_hold_ends_approved_denied_or_timed_out() -> None:
    assert holds.ending("approved", timeout=120) == (Decision.APPROVED, None)
    decision, error = holds.ending("denied", timeout=120)
    assert decision == Decision.DENIED and error is not None and error.code == "approval_denied"
    for state in ("expired", "pending"):
        decision, error = holds.ending(state, timeout=2.5)  # type: ignore[arg-type]
        assert decision == Decision.DENIED and error is not None and error.code == "approval_timeout"
        assert "2.5 s" in error.message


@pytest.fixture
def store() -> Iterator[ApprovalStore]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName="jitgate-holds",
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield ApprovalStore(client, "jitgate-holds")


def _held(store: ApprovalStore, now: float) -> Approval:
    approval = holds.new_hold(
        POLICY, CONN, _claims(), holds.request_facts(b"{}", "", CONN, "rerank", dict, []), ("documents:4>3",),
        method="POST", host="api.cohere.test", path="/v2/rerank", now=now, timeout=120, gateway="gw", flow_id="f",
    )
    store.create(approval, now=now)
    return approval


def test_an_undecided_hold_is_closed_expired(store: ApprovalStore) -> None:
    approval = _held(store, 1000.0)
    assert holds.close_undecided(store, approval.id, lambda: 1001.0) == "expired"
    found = store.get(approval.id, now=1002.0)
    assert found is not None and state_at(found[0], 1002.0) == "expired"


def test_a_decision_that_landed_first_wins_over_the_close(store: ApprovalStore) -> None:
    approval = _held(store, 1000.0)
    who = Identity("https://oidc.test", "alice", {"groups": ["platform-security"]})
    store.update(approval.id, lambda a: decide(a, who, "approve", "ok", now=1000.5), now=lambda: 1000.5)
    assert holds.close_undecided(store, approval.id, lambda: 1001.0) == "approved"


def test_an_unreachable_table_still_ends_the_hold_expired() -> None:
    class Broken:
        def update(self, *args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("table down")

    assert holds.close_undecided(Broken(), "hold_x", lambda: 1.0) == "expired"  # type: ignore[arg-type]
