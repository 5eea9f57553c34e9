from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import brotli
import pytest
import zstandard
from mitmproxy import exceptions, http
from mitmproxy.test import taddons, tflow

from addon import meta
from addon.approval_hold import ApprovalHold
from addon.hold_flows import request_facts
from jitgate.approval_store import ApprovalStore
from jitgate.approvals import decide, risk_reasons, state_at
from jitgate.errors import ApprovalExpired, SelfApproval
from jitgate.policy import Identity, parse_policy
from jitgate.records import Finding
from jitgate.state import HOLD_PK, REVOCATION_PK
from jitgate.token import Claims, new_jti
from tests.addon.jit_fixtures import TABLE, anyio_backend_fixture, aws_fixture  # noqa: F401 (fixtures)
from tests.bombs import MB, bomb, traced_peak

pytestmark = pytest.mark.anyio

POLICY = """
version: 1
issuers: [{issuer: https://oidc.test, audience: jitgate}]
admins: [{group: platform-security}]
connections:
  rerank:
    dialect: cohere
    upstream: https://api.cohere.test
    credential: {secret_id: jitgate/rerank}
    approval: {max_documents: 3, max_bytes: 4000}
  store:
    dialect: chroma
    upstream: https://store.test
    credential: {secret_id: jitgate/store, header: X-Chroma-Token, format: "{secret}"}
    approval:
      operations: [delete, drop_collection]
      approvers: {members: [{group: search-leads}]}
"""
REQUESTER = "system:serviceaccount:ranking:janitor"
LEAD = Identity("https://oidc.test", "alice", {"groups": ["search-leads"]})
ADMIN = Identity("https://oidc.test", "root", {"groups": ["platform-security"]})


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(POLICY)
    return p


def _claims(conn: str, sub: str = REQUESTER) -> Claims:
    return Claims.model_validate(
        {"iss": "https://broker.test", "aud": "jitgate", "sub": sub, "iat": 1, "nbf": 1, "exp": 2_000_000_000,
         "jti": new_jti(), "conn": conn, "scope": {"operations": ["rerank", "query", "delete"]}, "limits": {},
         "mask": "default", "job": "nightly"}
    )


def _flow(conn: str, operation: str, path: str, body: Any, *, findings: list[dict[str, str]] | None = None) -> Any:
    policy = parse_policy(POLICY)
    f = tflow.tflow()
    f.request.host = policy.connections[conn].upstream_host
    f.request.port = 443
    f.request.scheme = "https"
    f.request.method = "DELETE" if operation == "drop_collection" else "POST"
    f.request.path = path
    f.request.content = json.dumps(body).encode()
    meta.state_of(f).claims = _claims(conn)
    meta.state_of(f).use_connection(policy.connections[conn])
    meta.state_of(f).operation = operation
    if findings is not None:
        meta.state_of(f).findings = findings
    return f


def _rerank(n: int) -> Any:
    return _flow("rerank", "rerank", "/v2/rerank?api_key=should-not-leak", {"query": "q", "documents": ["d"] * n})


def _hold(aws: dict[str, Any], tctx: taddons.context, policy_file: Path, **over: Any) -> ApprovalHold:
    addon = over.pop("addon")
    opts = {"jitgate_policy": str(policy_file), "jitgate_table": TABLE, **over}
    tctx.configure(addon, **opts)
    return addon  # type: ignore[no-any-return]


def _hold_id(f: http.HTTPFlow) -> str:
    hold_id = meta.state_of(f).hold_id
    assert hold_id is not None
    return hold_id


def _item(aws: dict[str, Any], hold_id: str) -> dict[str, Any]:
    item = aws["dynamodb"].get_item(TableName=TABLE, Key={"pk": {"S": HOLD_PK}, "sk": {"S": hold_id}})["Item"]
    return item  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("flow_args", "held"),
    [
        (("rerank", "rerank", "/v2/rerank", {"query": "q", "documents": ["a", "b", "c"]}), False),
        (("rerank", "rerank", "/v2/rerank", {"query": "q", "documents": ["a", "b", "c", "d"]}), True),
        (("rerank", "rerank", "/v2/rerank", {"query": "q", "documents": ["x" * 5000]}), True),
        (("store", "query", "/api/v1/collections/c/query", {"query_texts": ["q"]}), False),
        (("store", "delete", "/api/v1/collections/c/delete", {"ids": ["1"]}), True),
        (("store", "drop_collection", "/api/v1/collections/c", {}), True),
    ],
)
async def test_risky_requests_are_held_others_pass(
    aws: dict[str, Any], policy_file: Path, flow_args: tuple[Any, ...], held: bool
) -> None:
    addon = ApprovalHold(dynamodb=aws["dynamodb"])
    with taddons.context(addon) as tctx:
        _hold(aws, tctx, policy_file, addon=addon)
        f = _flow(*flow_args)
        await addon.request(f)
        assert f.intercepted is held
        assert (meta.state_of(f).hold_id is not None) is held
        assert f.response is None
        addon.done()


def _encoded(body: bytes, encoding: str) -> bytes:
    if encoding == "identity":
        return body
    return {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress,
            "zstd": zstandard.ZstdCompressor().compress}[encoding](body)


@pytest.mark.parametrize("encoding", ["identity", "gzip", "deflate", "br", "zstd"])
@pytest.mark.parametrize(("text", "held"), [("x" * 3700, False), ("x" * 5000, True), ("x" * 300_000, True)])
async def test_max_bytes_is_judged_on_the_decoded_body(
    aws: dict[str, Any], policy_file: Path, encoding: str, text: str, held: bool
) -> None:
    addon = ApprovalHold(dynamodb=aws["dynamodb"])
    with taddons.context(addon) as tctx:
        _hold(aws, tctx, policy_file, addon=addon)
        f = _rerank(1)
        plain = json.dumps({"query": "q", "documents": [text]}).encode()
        f.request.headers["content-encoding"] = encoding
        f.request.raw_content = _encoded(plain, encoding)
        if encoding != "identity":
            assert len(f.request.raw_content) < 4000  # the wire size alone would pass max_bytes: 4000
        await addon.request(f)
        assert f.intercepted is held and f.response is None
        if held:
            summary = json.loads(_item(aws, _hold_id(f))["doc"]["S"])["summary"]
            assert summary["bytes"] == len(plain) and summary["reasons"] == [f"bytes:{len(plain)}>4000"]
        addon.done()


@pytest.mark.parametrize("encoding", ["gzip", "br"])
def test_a_bomb_is_sized_without_being_decoded(encoding: str) -> None:
    f = _rerank(1)
    f.request.headers["content-encoding"] = encoding
    f.request.raw_content = bomb(encoding, 300 * MB)
    conn = parse_policy(POLICY).connections["rerank"]
    facts, peak = traced_peak(lambda: request_facts(f, conn, "rerank"))
    assert facts.size > 16 * MB  # counted only until past the bound: "more than", never the whole 300 MB
    assert risk_reasons(conn.approval, facts) == (f"bytes:{facts.size}>4000",)
    assert peak < 4 * MB  # pieces only


@pytest.mark.parametrize(("encoding", "raw"), [("gzip", b"not gzip"), ("gzip, br", b"x"), ("compress", b"x")])
async def test_a_body_that_does_not_decode_is_refused_not_held(
    aws: dict[str, Any], policy_file: Path, encoding: str, raw: bytes
) -> None:
    addon = ApprovalHold(dynamodb=aws["dynamodb"])
    with taddons.context(addon) as tctx:
        _hold(aws, tctx, policy_file, addon=addon)
        f = _rerank(1)
        f.request.headers["content-encoding"] = encoding
        f.request.raw_content = raw
        await addon.request(f)
        assert not f.intercepted and meta.state_of(f).hold_id is None
        assert f.response.status_code == 400 and f.response.json()["code"] == "body_not_decodable"
        assert "content-encoding" not in f.request.headers
        addon.done()


@pytest.mark.parametrize("action", ["review", "mask", "block"])
async def test_findings_with_review_action_are_held(aws: dict[str, Any], policy_file: Path, action: str) -> None:
    addon = ApprovalHold(dynamodb=aws["dynamodb"])
    with taddons.context(addon) as tctx:
        _hold(aws, tctx, policy_file, addon=addon)
        f = _flow("rerank", "rerank", "/v2/rerank", {"query": "q", "documents": ["a"]},
                  findings=[Finding(type="email", location="request.body", action=action, tag="[EMAIL_1]")])
        await addon.request(f)
        assert f.intercepted is (action == "review")
        addon.done()


async def test_hold_item_has_masked_summary(aws: dict[str, Any], policy_file: Path) -> None:
    addon = ApprovalHold(dynamodb=aws["dynamodb"])
    with taddons.context(addon) as tctx:
        _hold(aws, tctx, policy_file, addon=addon, jitgate_approval_timeout="30")
        f = _rerank(5)
        await addon.request(f)
        item = _item(aws, _hold_id(f))
        addon.done()
    doc = json.loads(item["doc"]["S"])
    summary = doc["summary"]
    claims = meta.state_of(f).claims
    assert summary["sub"] == REQUESTER and summary["jti"] == claims.jti
    assert summary["operation"] == "rerank" and summary["documents"] == 5
    assert summary["bytes"] == len(f.request.raw_content) and summary["path"] == "/v2/rerank"
    assert summary["reasons"] == ["documents:5>3"]
    assert "should-not-leak" not in item["doc"]["S"] and '"d"' not in item["doc"]["S"]
    # No connection approvers: the admins, of the policy's one issuer.
    assert doc["approvers"]["members"] == [{"issuer": "https://oidc.test", "sub": None, "group": "platform-security"}]
    assert doc["expires_at"] - doc["created_at"] == 30.0
    assert item["state"]["S"] == "pending"


async def test_approved_hold_resumes_denied_is_403(aws: dict[str, Any], policy_file: Path) -> None:
    addon = ApprovalHold(dynamodb=aws["dynamodb"])
    store = ApprovalStore(aws["dynamodb"], TABLE)
    with taddons.context(addon) as tctx:
        _hold(aws, tctx, policy_file, addon=addon)
        ok, no, waiting = (_flow("store", "delete", "/api/v1/collections/c/delete", {"ids": ["1"]}) for _ in range(3))
        for f in (ok, no, waiting):
            await addon.request(f)
        assert set(addon.held) == {_hold_id(f) for f in (ok, no, waiting)}
        store.update(_hold_id(ok), lambda a: decide(a, LEAD, "approve", "planned cleanup", now=a.created_at),
                     now=lambda: 0.0)
        store.update(_hold_id(no), lambda a: decide(a, LEAD, "deny", "not today", now=a.created_at),
                     now=lambda: 0.0)
        await addon.poll_once()
        assert not ok.intercepted and ok.response is None and meta.state_of(ok).decision == "approved"
        assert not no.intercepted and no.response.status_code == 403
        assert no.response.json()["code"] == "approval_denied"
        assert meta.state_of(no).decision == "denied"
        assert waiting.intercepted and waiting.response is None  # still held, nobody decided
        assert set(addon.held) == {_hold_id(waiting)}
        addon.done()


async def test_requester_cannot_approve_own_hold_and_admins_do_not_decide_store_holds(
    aws: dict[str, Any], policy_file: Path
) -> None:
    addon = ApprovalHold(dynamodb=aws["dynamodb"])
    store = ApprovalStore(aws["dynamodb"], TABLE)
    with taddons.context(addon) as tctx:
        _hold(aws, tctx, policy_file, addon=addon)
        f = _flow("store", "delete", "/api/v1/collections/c/delete", {"ids": ["1"]})
        await addon.request(f)
        me = Identity("https://oidc.test", REQUESTER, {"groups": ["search-leads"]})
        with pytest.raises(SelfApproval):
            store.update(_hold_id(f), lambda a: decide(a, me, "approve", "mine", now=a.created_at),
                         now=lambda: 0.0)
        with pytest.raises(Exception) as err:
            store.update(_hold_id(f), lambda a: decide(a, ADMIN, "approve", "admin", now=a.created_at),
                         now=lambda: 0.0)
        assert getattr(err.value, "code", None) == "not_an_approver"
        await addon.poll_once()
        assert f.intercepted
        addon.done()


async def test_timeout_is_403_and_closes_the_hold(aws: dict[str, Any], policy_file: Path) -> None:
    mono, clock = Clock(100.0), Clock()
    addon = ApprovalHold(dynamodb=aws["dynamodb"], monotonic=mono, clock=clock)
    store = ApprovalStore(aws["dynamodb"], TABLE)
    with taddons.context(addon) as tctx:
        _hold(aws, tctx, policy_file, addon=addon, jitgate_approval_timeout="10", jitgate_approval_poll="0.5")
        f = _rerank(4)
        await addon.request(f)
        mono.t += 9.9
        await addon.poll_once()
        assert f.intercepted
        mono.t += 0.2
        clock.t += 10.1
        await addon.poll_once()
        assert not f.intercepted
        assert f.response.status_code == 403 and f.response.json()["code"] == "approval_timeout"
        found = store.get(_hold_id(f), now=clock.t)
        assert found is not None and state_at(found[0], clock.t) == "expired" and found[0].closed == "expired"
        with pytest.raises(ApprovalExpired):  # a late approval cannot land after the timeout
            store.update(_hold_id(f), lambda a: decide(a, ADMIN, "approve", "late", now=clock.t),
                         now=clock)
        addon.done()


async def test_approval_landing_at_the_deadline_wins_over_the_timeout(aws: dict[str, Any], policy_file: Path) -> None:
    mono = Clock(100.0)
    addon = ApprovalHold(dynamodb=aws["dynamodb"], monotonic=mono)
    store = ApprovalStore(aws["dynamodb"], TABLE)
    with taddons.context(addon) as tctx:
        _hold(aws, tctx, policy_file, addon=addon, jitgate_approval_timeout="10", jitgate_approval_poll="0.5")
        f = _rerank(4)
        await addon.request(f)
        store.update(_hold_id(f), lambda a: decide(a, ADMIN, "approve", "ok", now=a.created_at),
                     now=lambda: 0.0)
        mono.t += 11
        await addon.poll_once()
        assert not f.intercepted and f.response is None and meta.state_of(f).decision == "approved"
        addon.done()


async def test_unwritable_table_refuses_instead_of_forwarding(aws: dict[str, Any], policy_file: Path) -> None:
    addon = ApprovalHold(dynamodb=aws["dynamodb"])
    with taddons.context(addon) as tctx:
        _hold(aws, tctx, policy_file, addon=addon, jitgate_table="no-such-table")
        f = _rerank(4)
        await addon.request(f)
        assert not f.intercepted
        assert f.response.status_code == 503 and f.response.json()["code"] == "approval_unavailable"
        addon.done()


async def test_refused_flows_and_flows_without_claims_are_left_alone(aws: dict[str, Any], policy_file: Path) -> None:
    addon = ApprovalHold(dynamodb=aws["dynamodb"])
    with taddons.context(addon) as tctx:
        _hold(aws, tctx, policy_file, addon=addon)
        refused = _rerank(10)
        meta.state_of(refused).error = "token_revoked"
        no_claims = _rerank(10)
        meta.state_of(no_claims).claims = None
        for f in (refused, no_claims):
            await addon.request(f)
            assert not f.intercepted and meta.state_of(f).hold_id is None
        addon.done()


async def test_several_gateways_share_the_table(aws: dict[str, Any], policy_file: Path) -> None:
    one, two = ApprovalHold(dynamodb=aws["dynamodb"]), ApprovalHold(dynamodb=aws["dynamodb"])
    store = ApprovalStore(aws["dynamodb"], TABLE)
    with taddons.context(one) as ctx1:
        _hold(aws, ctx1, policy_file, addon=one)
        f1 = _rerank(4)
        await one.request(f1)
    with taddons.context(two) as ctx2:
        _hold(aws, ctx2, policy_file, addon=two)
        f2 = _rerank(4)
        await two.request(f2)
    store.update(_hold_id(f2), lambda a: decide(a, ADMIN, "approve", "ok", now=a.created_at), now=lambda: 0.0)
    await one.poll_once()
    await two.poll_once()
    assert f1.intercepted and not f2.intercepted  # each gateway resumes only its own, from the shared table
    store.update(_hold_id(f1), lambda a: decide(a, ADMIN, "deny", "no", now=a.created_at), now=lambda: 0.0)
    await one.poll_once()
    assert f1.response.json()["code"] == "approval_denied"
    one.done()
    two.done()


async def test_background_poller_resumes_without_blocking_other_flows(aws: dict[str, Any], policy_file: Path) -> None:
    addon = ApprovalHold(dynamodb=aws["dynamodb"])
    store = ApprovalStore(aws["dynamodb"], TABLE)
    with taddons.context(addon) as tctx:
        _hold(aws, tctx, policy_file, addon=addon, jitgate_approval_poll="0.05")
        held = _rerank(4)
        await addon.request(held)
        assert held.intercepted
        passing = [_rerank(2) for _ in range(5)]
        for f in passing:  # handled while the other one is held
            await addon.request(f)
            assert not f.intercepted
        await asyncio.sleep(0.2)
        assert held.intercepted
        store.update(_hold_id(held), lambda a: decide(a, ADMIN, "approve", "ok", now=a.created_at),
                     now=lambda: 0.0)
        await asyncio.wait_for(held.wait_for_resume(), timeout=10)
        assert held.response is None and meta.state_of(held).decision == "approved"
        addon.done()


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"jitgate_approval_timeout": "0"}, "jitgate_approval_timeout"),
        ({"jitgate_approval_timeout": "soon"}, "jitgate_approval_timeout"),
        ({"jitgate_approval_timeout": "inf"}, "jitgate_approval_timeout"),
        ({"jitgate_approval_poll": "-1"}, "jitgate_approval_poll"),
        ({"jitgate_approval_timeout": "1", "jitgate_approval_poll": "2"}, "jitgate_approval_poll"),
        ({"jitgate_table": ""}, "jitgate_table"),
        ({"jitgate_approval_topic": "not-an-arn"}, "jitgate_approval_topic"),
    ],
)
async def test_bad_options_stop_the_start(aws: dict[str, Any], policy_file: Path, over: dict[str, Any],
                                          message: str) -> None:
    addon = ApprovalHold(dynamodb=aws["dynamodb"])
    with taddons.context(addon) as tctx:
        _hold(aws, tctx, policy_file, addon=addon)  # a good start, so the rollback has good options
        with pytest.raises(exceptions.OptionsError, match=message):
            tctx.configure(addon, **over)


async def test_default_timeout_is_120_seconds(aws: dict[str, Any], policy_file: Path) -> None:
    addon = ApprovalHold(dynamodb=aws["dynamodb"])
    with taddons.context(addon) as tctx:
        _hold(aws, tctx, policy_file, addon=addon)
        assert addon.timeout == 120.0 and addon.poll == 1.0
        tctx.configure(addon, jitgate_approval_timeout="2m")
        assert addon.timeout == 120.0
        tctx.configure(addon, jitgate_approval_timeout="7.5")
        assert addon.timeout == 7.5


async def test_approval_does_not_resume_a_token_revoked_or_expired_while_held(
    aws: dict[str, Any], policy_file: Path
) -> None:
    clock = Clock()
    addon = ApprovalHold(dynamodb=aws["dynamodb"], clock=clock)
    store = ApprovalStore(aws["dynamodb"], TABLE)
    with taddons.context(addon) as tctx:
        _hold(aws, tctx, policy_file, addon=addon)
        revoked, expiring, fine = _rerank(4), _rerank(4), _rerank(4)
        meta.state_of(expiring).claims = meta.state_of(expiring).claims.model_copy(update={"exp": int(clock.t) + 5})
        for f in (revoked, expiring, fine):
            await addon.request(f)
            store.update(_hold_id(f), lambda a: decide(a, ADMIN, "approve", "ok", now=a.created_at),
                         now=lambda: 0.0)
        aws["dynamodb"].put_item(TableName=TABLE, Item={
            "pk": {"S": REVOCATION_PK}, "sk": {"S": meta.state_of(revoked).claims.jti},
            "expires_at": {"N": str(int(clock.t) + 600)}})
        clock.t += 10
        await addon.poll_once()
        assert revoked.response.status_code == 403 and revoked.response.json()["code"] == "token_revoked"
        assert expiring.response.status_code == 401 and expiring.response.json()["code"] == "token_expired"
        assert fine.response is None and meta.state_of(fine).decision == "approved"
        assert not any(f.intercepted for f in (revoked, expiring, fine))
        addon.done()


async def test_unreadable_revocations_refuse_an_approved_hold(aws: dict[str, Any], policy_file: Path) -> None:
    addon = ApprovalHold(dynamodb=aws["dynamodb"])
    store = ApprovalStore(aws["dynamodb"], TABLE)
    with taddons.context(addon) as tctx:
        _hold(aws, tctx, policy_file, addon=addon)
        f = _rerank(4)
        await addon.request(f)
        store.update(_hold_id(f), lambda a: decide(a, ADMIN, "approve", "ok", now=a.created_at), now=lambda: 0.0)
        addon.table = "no-such-table"  # the hold was read; the revocation read now fails
        await addon.poll_once()
        assert f.response.status_code == 503 and f.response.json()["code"] == "revocation_unavailable"
        addon.done()


async def test_new_holds_are_published_without_the_token_or_body(aws: dict[str, Any], policy_file: Path) -> None:
    import boto3

    sns, sqs = boto3.client("sns", region_name="us-east-1"), boto3.client("sqs", region_name="us-east-1")
    topic = sns.create_topic(Name="approvals")["TopicArn"]
    queue = sqs.create_queue(QueueName="approvers")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    addon = ApprovalHold(dynamodb=aws["dynamodb"], sns=sns)
    with taddons.context(addon) as tctx:
        _hold(aws, tctx, policy_file, addon=addon, jitgate_approval_topic=topic)
        f = _rerank(4)
        f.request.headers["Authorization"] = "Bearer eyJfake.token.value"
        await addon.request(f)
        for _ in range(50):
            messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
            if messages:
                break
            await asyncio.sleep(0.05)
        addon.done()
    (msg,) = messages
    note = json.loads(json.loads(msg["Body"])["Message"])
    assert note["id"] == _hold_id(f) and note["kind"] == "hold" and note["summary"]["documents"] == 4
    assert "eyJfake" not in msg["Body"] and '"d"' not in msg["Body"] and "should-not-leak" not in msg["Body"]


REVIEW_POLICY = """
version: 1
issuers: [{issuer: https://oidc.test, audience: jitgate}]
admins: [{group: platform-security}]
profiles:
  default: {}
  reviewed: {request_pii: review}
connections:
  rerank:
    dialect: cohere
    upstream: https://api.cohere.test
    credential: {secret_id: jitgate/rerank}
    mask: reviewed
"""


@pytest.mark.parametrize("with_hold", [True, False])
async def test_review_findings_from_leak_guard_are_held_or_blocked_without_a_hold(
    aws: dict[str, Any], tmp_path: Path, with_hold: bool
) -> None:
    import secrets as _secrets

    from addon.leak_guard import LeakGuard
    from jitgate.inspect import Scanner

    policy = tmp_path / "review.yaml"
    policy.write_text(REVIEW_POLICY)
    leak = LeakGuard(scanner=Scanner(_secrets.token_bytes(32)), review_held=with_hold)
    hold = ApprovalHold(dynamodb=aws["dynamodb"])
    chain = (leak, hold) if with_hold else (leak,)
    email = "jane.roe" + "@" + "example.org"
    with taddons.context(*chain) as tctx:
        tctx.configure(leak, jitgate_policy=str(policy), jitgate_table=TABLE, jitgate_max_inspect_bytes=65536,
                       jitgate_stream_window=512)
        f = tflow.tflow()
        f.request.host, f.request.path, f.request.method = "api.cohere.test", "/v2/rerank", "POST"
        f.request.headers["content-type"] = "application/json"
        f.request.content = json.dumps({"query": "q", "documents": [f"write to {email} today"]}).encode()
        claims = _claims("rerank").model_copy(update={"mask": "reviewed"})
        meta.state_of(f).claims = claims
        meta.state_of(f).operation = "rerank"
        leak.request(f)
        if with_hold:
            assert f.response is None
            assert [x.action for x in meta.state_of(f).findings] == ["review"]
            assert email.encode() not in f.request.content  # masked either way
            await hold.request(f)
            assert f.intercepted
            doc = json.loads(_item(aws, _hold_id(f))["doc"]["S"])
            assert doc["summary"]["reasons"] == ["finding:email"] and email not in json.dumps(doc)
            hold.done()
        else:
            assert f.response.status_code == 403 and f.response.json()["code"] == "leak_blocked"


async def test_holds_are_capped_per_gateway(aws: dict[str, Any], policy_file: Path) -> None:
    addon = ApprovalHold(dynamodb=aws["dynamodb"])
    with taddons.context(addon) as tctx:
        _hold(aws, tctx, policy_file, addon=addon, jitgate_approval_max_held=2)
        flows = [_rerank(4) for _ in range(3)]
        for f in flows:
            await addon.request(f)
        assert [f.intercepted for f in flows] == [True, True, False]
        assert flows[2].response.status_code == 503 and flows[2].response.json()["code"] == "approval_unavailable"
        addon.done()
