"""Approval routes through the real handler: mock_aws table, bucket and topic, a real OIDC issuer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from jitgate.approval_store import ApprovalStore
from jitgate.approvals import Approval, new_id
from jitgate.devstack.aws import Stack
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import ADMIN_GROUP, APPROVER_GROUP, MAINTAINER_SUB, approvers, policy_dict
from jitgate.events import TokenEvent
from jitgate.policy import Approvers
from jitgate.token import KeySet, verify_token
from tests.broker.conftest import BROKER_URL, Clock, Invoke, api_event, load_event

LEAD_A, LEAD_B, LEAD_C = "lead-alice", "lead-bob", "lead-carol"


@pytest.fixture
def policy_file(issuer: OidcIssuer, tmp_path: Path) -> Path:
    """The dev policy with a 2-of-M issuance grant and named approvers for store holds."""
    data: Any = policy_dict(issuer.url)
    for grant in data["grants"]:
        if grant["name"] == "store-maintenance":
            grant["approval"]["approvers"]["count"] = 2
    data["connections"]["store-test"]["approval"]["approvers"] = approvers(issuer.url, APPROVER_GROUP)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _lead(issuer: OidcIssuer, clock: Clock, sub: str) -> str:
    return issuer.mint(sub, {"groups": [APPROVER_GROUP]}, now=clock.now)


def _requester(issuer: OidcIssuer, clock: Clock, groups: list[str] | None = None) -> str:
    return issuer.mint(MAINTAINER_SUB, {"groups": groups} if groups else None, now=clock.now)


def _request(invoke: Invoke, issuer: OidcIssuer, clock: Clock, **body: Any) -> str:
    status, answer, _ = invoke(
        load_event("mint", token=_requester(issuer, clock), body={"connection": "store-test", **body})
    )
    assert status == 202, answer
    assert set(answer) == {"approval_id", "state", "expires_at", "required"}
    return str(answer["approval_id"])


def _vote(invoke: Invoke, token: str, approval_id: str, verdict: str, reason: str | None = "ok") -> tuple[int, Any]:
    body = {} if reason is None else {"reason": reason}
    status, answer, _ = invoke(api_event("POST", f"/v1/approvals/{approval_id}/{verdict}", token, body))
    return status, answer


def _get(invoke: Invoke, token: str, approval_id: str) -> tuple[int, Any]:
    status, answer, _ = invoke(api_event("GET", f"/v1/approvals/{approval_id}", token))
    return status, answer


def _events(stack: Stack) -> list[TokenEvent]:
    s3 = boto3.client("s3", region_name=stack.region)
    out = []
    for obj in s3.list_objects_v2(Bucket=stack.bucket, Prefix="token-events/").get("Contents", []):
        body = s3.get_object(Bucket=stack.bucket, Key=obj["Key"])["Body"].read().decode()
        out += [TokenEvent.model_validate_json(line) for line in body.splitlines()]
    return sorted(out, key=lambda e: e.event_time)


def _keyset(invoke: Invoke) -> KeySet:
    return KeySet.from_jwks(invoke(load_event("jwks"))[1])


def test_request_is_pending_published_and_audited_with_nothing_minted(
    invoke: Invoke, issuer: OidcIssuer, clock: Clock, stack: Stack
) -> None:
    sqs = boto3.client("sqs", region_name=stack.region)
    queue = sqs.create_queue(QueueName="approvers")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    boto3.client("sns", region_name=stack.region).subscribe(TopicArn=stack.topic_arn, Protocol="sqs", Endpoint=arn)
    requester_token = _requester(issuer, clock)
    status, answer, _ = invoke(
        load_event("mint", token=requester_token, body={"connection": "store-test", "job": "cleanup-42"})
    )
    assert status == 202 and answer["state"] == "pending" and answer["required"] == 2
    assert answer["expires_at"] == int(clock.now) + 3600
    approval_id = answer["approval_id"]

    (msg,) = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    note = json.loads(json.loads(msg["Body"])["Message"])
    assert note["id"] == approval_id and note["requester"] == MAINTAINER_SUB
    assert note["summary"]["job"] == "cleanup-42" and note["connection"] == "store-test"
    assert requester_token not in msg["Body"] and "secret" not in msg["Body"].lower()
    assert all(v not in msg["Body"] for v in stack.secrets.values())

    (event,) = _events(stack)
    assert (event.event_type, event.status, event.apv, event.sub, event.jti) == (
        "approval_requested", 202, approval_id, MAINTAINER_SUB, None
    )
    status, view = _get(invoke, requester_token, approval_id)
    assert status == 200 and view["state"] == "pending" and "token" not in view


def test_two_of_m_then_the_requester_collects_once_and_the_ttl_starts_then(
    invoke: Invoke, issuer: OidcIssuer, clock: Clock, stack: Stack
) -> None:
    approval_id = _request(invoke, issuer, clock, ttl="20m")
    clock.now += 60
    status, view = _vote(invoke, _lead(issuer, clock, LEAD_A), approval_id, "approve", "planned cleanup")
    assert status == 200 and (view["state"], view["approvals"], view["required"]) == ("pending", 1, 2)
    clock.now += 1  # events sort by time
    status, err = _vote(invoke, _lead(issuer, clock, LEAD_A), approval_id, "approve", "again")
    assert (status, err["code"]) == (409, "already_voted")
    status, view = _get(invoke, _requester(issuer, clock), approval_id)
    assert view["state"] == "pending" and "token" not in view
    clock.now += 60
    status, view = _vote(invoke, _lead(issuer, clock, LEAD_B), approval_id, "approve", "ok by me")
    assert (status, view["state"], view["approvals"]) == (200, "approved", 2)
    assert "token" not in view  # an approver never sees the token

    clock.now += 600  # the requester comes back later: the token's lifetime starts now
    status, view = _get(invoke, _requester(issuer, clock), approval_id)
    assert status == 200 and view["state"] == "approved" and view["collected"] is True
    claims = verify_token(view["token"], _keyset(invoke), now=clock.now, issuer=BROKER_URL)
    assert claims.iat == int(clock.now) and claims.exp == int(clock.now) + 1200
    assert claims.apv == approval_id and claims.sub == MAINTAINER_SUB and claims.conn == "store-test"
    assert view["jti"] == claims.jti

    status, again = _get(invoke, _requester(issuer, clock), approval_id)
    assert status == 200 and again["collected"] is True and "token" not in again and again["jti"] == claims.jti

    kinds = [(e.event_type, e.actor, e.apv) for e in _events(stack)]
    assert kinds == [
        ("approval_requested", None, approval_id),
        ("approval_decided", LEAD_A, approval_id),
        ("denied", LEAD_A, approval_id),  # the second vote, refused as already_voted
        ("approval_decided", LEAD_B, approval_id),
        ("issued", None, approval_id),
    ]
    assert _events(stack)[-1].jti == claims.jti


def test_approvers_are_shown_the_ttl_the_collected_token_gets_when_the_grant_has_no_default(
    invoke: Invoke, issuer: OidcIssuer, clock: Clock
) -> None:
    # store-maintenance has max_ttl 1h and no default_ttl: the broker's JITGATE_DEFAULT_TTL (15m) applies.
    approval_id = _request(invoke, issuer, clock)
    for lead in (LEAD_A, LEAD_B):
        clock.now += 1
        status, view = _vote(invoke, _lead(issuer, clock, lead), approval_id, "approve", "ok")
        assert status == 200
    shown = view["summary"]["ttl"]
    status, view = _get(invoke, _requester(issuer, clock), approval_id)
    assert status == 200 and view["collected"] is True and view["summary"]["ttl"] == shown
    claims = verify_token(view["token"], _keyset(invoke), now=clock.now, issuer=BROKER_URL)
    assert (shown, view["ttl"], claims.exp - claims.iat) == (900, 900, 900)


def test_one_denial_denies(invoke: Invoke, issuer: OidcIssuer, clock: Clock, stack: Stack) -> None:
    approval_id = _request(invoke, issuer, clock)
    _vote(invoke, _lead(issuer, clock, LEAD_A), approval_id, "approve")
    clock.now += 1  # events sort by time
    status, view = _vote(invoke, _lead(issuer, clock, LEAD_B), approval_id, "deny", "wrong collection")
    assert (status, view["state"]) == (200, "denied")
    assert view["votes"][-1] == {"approver": LEAD_B, "verdict": "deny", "reason": "wrong collection",
                                 "at": int(clock.now)}
    status, err = _vote(invoke, _lead(issuer, clock, LEAD_C), approval_id, "approve")
    assert (status, err["code"]) == (409, "approval_closed")
    status, view = _get(invoke, _requester(issuer, clock), approval_id)
    assert view["state"] == "denied" and "token" not in view
    decided = [e for e in _events(stack) if e.event_type == "approval_decided"]
    assert [e.code for e in decided] == [None, "approval_denied"]


@pytest.mark.parametrize("verdict", ["approve", "deny"])
def test_self_approval_is_refused_even_in_the_approver_group(
    invoke: Invoke, issuer: OidcIssuer, clock: Clock, verdict: str
) -> None:
    approval_id = _request(invoke, issuer, clock)
    self_token = _requester(issuer, clock, groups=[APPROVER_GROUP])
    status, err = _vote(invoke, self_token, approval_id, verdict)
    assert (status, err["code"]) == (403, "self_approval")
    _, listed, _ = invoke(api_event("GET", "/v1/approvals", self_token))
    assert approval_id not in [a["id"] for a in listed["approvals"]]
    assert _get(invoke, self_token, approval_id)[1]["votes"] == []


def test_outsiders_can_neither_decide_nor_see(invoke: Invoke, issuer: OidcIssuer, clock: Clock) -> None:
    approval_id = _request(invoke, issuer, clock)
    outsider = issuer.mint("intern", {"groups": ["interns"]}, now=clock.now)
    status, err = _vote(invoke, outsider, approval_id, "approve")
    assert (status, err["code"]) == (403, "not_an_approver")
    assert _get(invoke, outsider, approval_id)[0] == 404
    assert _get(invoke, outsider, new_id("issuance"))[0] == 404
    assert _get(invoke, outsider, "not-an-id")[0] == 404
    admin = issuer.mint("sec-admin", {"groups": [ADMIN_GROUP]}, now=clock.now)
    assert _get(invoke, admin, approval_id)[0] == 200  # admins may look, not decide
    assert _vote(invoke, admin, approval_id, "approve")[1]["code"] == "not_an_approver"


def test_pending_expires_as_a_real_state(invoke: Invoke, issuer: OidcIssuer, clock: Clock, stack: Stack) -> None:
    approval_id = _request(invoke, issuer, clock)
    _vote(invoke, _lead(issuer, clock, LEAD_A), approval_id, "approve")
    clock.now += 3600
    status, view = _get(invoke, _requester(issuer, clock), approval_id)
    assert (status, view["state"]) == (200, "expired") and "token" not in view
    status, err = _vote(invoke, _lead(issuer, clock, LEAD_B), approval_id, "approve")
    assert (status, err["code"]) == (410, "approval_expired")
    _get(invoke, _requester(issuer, clock), approval_id)  # a second look writes no second event
    expired = [e for e in _events(stack) if e.event_type == "approval_expired"]
    assert len(expired) == 1 and expired[0].apv == approval_id and expired[0].code == "approval_expired"
    _, listed, _ = invoke(api_event("GET", "/v1/approvals", _lead(issuer, clock, LEAD_B)))
    assert listed["approvals"] == []


@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": 5}, {"reason": "x" * 501}])
def test_a_decision_needs_a_reason(invoke: Invoke, issuer: OidcIssuer, clock: Clock, body: dict[str, Any]) -> None:
    approval_id = _request(invoke, issuer, clock)
    status, answer, _ = invoke(api_event("POST", f"/v1/approvals/{approval_id}/approve", _lead(issuer, clock, LEAD_A),
                                     body))
    assert (status, answer["code"]) == (400, "bad_request")


def test_unauthenticated_calls_are_401(invoke: Invoke) -> None:
    for event in (api_event("GET", "/v1/approvals", None), api_event("POST", f"/v1/approvals/{new_id('hold')}/approve",
                                                              None, {"reason": "x"})):
        status, answer, _ = invoke(event)
        assert (status, answer["code"]) == (401, "unauthenticated")


def test_list_shows_what_the_caller_may_decide(invoke: Invoke, issuer: OidcIssuer, clock: Clock) -> None:
    first = _request(invoke, issuer, clock)
    clock.now += 1
    second = _request(invoke, issuer, clock)
    _vote(invoke, _lead(issuer, clock, LEAD_A), first, "approve")
    _, listed_a, _ = invoke(api_event("GET", "/v1/approvals", _lead(issuer, clock, LEAD_A)))
    assert [a["id"] for a in listed_a["approvals"]] == [second]  # already voted on the first
    _, listed_b, _ = invoke(api_event("GET", "/v1/approvals", _lead(issuer, clock, LEAD_B)))
    assert [a["id"] for a in listed_b["approvals"]] == [first, second]
    _, listed_r, _ = invoke(api_event("GET", "/v1/approvals", _requester(issuer, clock)))
    assert listed_r["approvals"] == []


def test_gateway_holds_are_decided_through_the_same_routes(
    invoke: Invoke, issuer: OidcIssuer, clock: Clock, stack: Stack
) -> None:
    store = ApprovalStore(boto3.client("dynamodb", region_name=stack.region), stack.table)
    hold = Approval(
        id=new_id("hold"), kind="hold", requester="repo:acme/search", connection="store-test",
        approvers=Approvers.model_validate(approvers(issuer.url, APPROVER_GROUP)),
        created_at=clock.now, expires_at=clock.now + 120,
        summary={"operation": "delete", "path": "/api/v1/collections/candidates/delete", "bytes": 20, "jti": "j" * 32},
    )
    store.create(hold, now=clock.now)
    _, listed, _ = invoke(api_event("GET", "/v1/approvals", _lead(issuer, clock, LEAD_A)))
    (item,) = listed["approvals"]
    assert item["id"] == hold.id and item["kind"] == "hold" and item["summary"]["operation"] == "delete"
    status, view = _vote(invoke, _lead(issuer, clock, LEAD_A), hold.id, "approve", "expected cleanup")
    assert (status, view["state"]) == (200, "approved")
    got = store.get(hold.id, now=clock.now)
    assert got is not None and got[0].votes[0].approver == LEAD_A
    (event,) = [e for e in _events(stack) if e.apv == hold.id]
    assert (event.event_type, event.actor, event.jti, event.operations) == (
        "approval_decided", LEAD_A, "j" * 32, ["delete"]
    )


def test_failed_signing_at_collection_lets_the_requester_try_again(
    invoke: Invoke, issuer: OidcIssuer, clock: Clock, svc: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jitgate.errors import SigningUnavailable

    approval_id = _request(invoke, issuer, clock)
    _vote(invoke, _lead(issuer, clock, LEAD_A), approval_id, "approve")
    _vote(invoke, _lead(issuer, clock, LEAD_B), approval_id, "approve")
    real_sign = svc.signer.sign

    def broken(_claims: Any) -> str:
        raise SigningUnavailable("the signing key cannot be used right now")

    monkeypatch.setattr(svc.signer, "sign", broken)
    status, err = _get(invoke, _requester(issuer, clock), approval_id)
    assert (status, err["code"]) == (503, "signing_unavailable")
    monkeypatch.setattr(svc.signer, "sign", real_sign)
    status, view = _get(invoke, _requester(issuer, clock), approval_id)
    assert status == 200 and view["token"].startswith("eyJ")
    assert verify_token(view["token"], _keyset(invoke), now=clock.now, issuer=BROKER_URL).apv == approval_id


def test_an_approved_token_must_be_collected_within_one_window(
    invoke: Invoke, issuer: OidcIssuer, clock: Clock
) -> None:
    approval_id = _request(invoke, issuer, clock)
    clock.now += 3000
    _vote(invoke, _lead(issuer, clock, LEAD_A), approval_id, "approve")
    _vote(invoke, _lead(issuer, clock, LEAD_B), approval_id, "approve")
    clock.now += 3599  # past the request window, still within one window of the approval
    late_ok = _get(invoke, _requester(issuer, clock), _request(invoke, issuer, clock))  # unrelated, pending
    assert late_ok[1]["state"] == "pending"
    status, view = _get(invoke, _requester(issuer, clock), approval_id)
    assert status == 200 and view["token"].startswith("eyJ")

    other = _request(invoke, issuer, clock)
    _vote(invoke, _lead(issuer, clock, LEAD_A), other, "approve")
    _vote(invoke, _lead(issuer, clock, LEAD_B), other, "approve")
    clock.now += 3600
    status, err = _get(invoke, _requester(issuer, clock), other)
    assert (status, err["code"]) == (410, "approval_expired")
