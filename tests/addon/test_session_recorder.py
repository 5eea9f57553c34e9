from __future__ import annotations

import asyncio
import json
import random
import secrets
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import exceptions
from mitmproxy import flow as flow_mod
from mitmproxy.test import taddons, tflow

from addon import meta
from addon.respond import refuse
from addon.session_recorder import SessionRecorder
from jitgate.digest import sha256_text
from jitgate.errors import InvalidToken
from jitgate.records import COLUMNS, Finding
from jitgate.token import Claims, Limits, Scope

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _claims(fields: tuple[str, ...] | None = None) -> Claims:
    return Claims(
        iss="https://broker.test",
        aud="jitgate",
        sub="repo:acme/search:ref:refs/heads/main",
        iat=1,
        nbf=1,
        exp=2,
        jti="jti-" + secrets.token_hex(8),
        conn="cohere-prod",
        scope=Scope(operations=("rerank",), fields=fields),
        limits=Limits(),
        mask="default",
        job="nightly-rerank",
    )


def _records(spool_dir: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for sub in ("open", "closed"):
        for p in sorted((spool_dir / sub).glob("*.jsonl")):
            out += [json.loads(line) for line in p.read_bytes().splitlines()]
    return out


def _answer(f: Any) -> None:
    """What the upstream sends back; set after the request hooks ran, as in the proxy."""
    f.response = tflow.tresp()
    f.response.status_code = 200
    f.response.content = json.dumps(
        {"results": [{"index": 1, "relevance_score": 0.93}, {"index": 0, "relevance_score": 0.12}]}
    ).encode()


def _rerank_flow(claims: Claims, credential: str, docs: list[str]) -> Any:
    f = tflow.tflow()
    f.request.method = "POST"
    f.request.host = "api.cohere.com"
    f.request.path = "/v2/rerank?debug=" + credential
    f.request.headers["Authorization"] = "Bearer " + credential
    f.request.content = json.dumps({"model": "rerank-v3.5", "query": "refund policy", "documents": docs}).encode()
    meta.state_of(f).claims = claims
    meta.state_of(f).token_sha256 = sha256_text("the-token")
    meta.state_of(f).operation = "rerank"
    meta.state_of(f).decision = "allowed"
    meta.state_of(f).injected = True
    meta.state_of(f).inspected = ["request", "response"]  # as leak_guard leaves it
    return f


async def test_rerank_flow_is_recorded_without_credential(tmp_path: Path) -> None:
    rec = SessionRecorder()
    credential = "co-" + secrets.token_urlsafe(24)
    claims = _claims()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, jitgate_spool_dir=str(tmp_path), jitgate_gateway_id="gw-test")
        flow = _rerank_flow(claims, credential, ["shipping times", "refund policy for damaged goods"])
        rec.request(flow)
        assert flow.response is None  # not refused
        _answer(flow)
        await rec.response(flow)
        rec.spool.rotate()
        raw = b"".join(p.read_bytes() for p in (tmp_path / "closed").glob("*.jsonl"))
        rec.done()
    assert credential.encode() not in raw and b"the-token" not in raw
    (r,) = _records(tmp_path)
    assert list(r) == [c for c, _ in COLUMNS]
    assert (r["jti"], r["sub"], r["conn"], r["job"]) == (claims.jti, claims.sub, "cohere-prod", "nightly-rerank")
    assert r["gateway"] == "gw-test" and r["flow_id"] == flow.id
    assert (r["method"], r["host"], r["path"], r["status"]) == ("POST", "api.cohere.com", "/v2/rerank", 200)
    assert r["rerank_query"] == "refund policy"
    assert r["doc_count"] == 2
    assert r["doc_sha256"] == [sha256_text("shipping times"), sha256_text("refund policy for damaged goods")]
    assert r["ranking"] == [{"index": 1, "score": 0.93}, {"index": 0, "score": 0.12}]
    assert r["decision"] == "allowed" and r["error"] is None
    assert r["request_bytes"] == len(flow.request.raw_content)


async def test_a_held_flow_is_recorded_with_its_approval(tmp_path: Path) -> None:
    rec = SessionRecorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, jitgate_spool_dir=str(tmp_path))
        flow = _rerank_flow(_claims(), "co-" + secrets.token_urlsafe(24), ["a", "b"])
        meta.state_of(flow).hold_id = "hold-" + "a" * 32  # as approval_hold leaves an approved flow
        meta.state_of(flow).decision = "approved"
        rec.request(flow)
        _answer(flow)
        await rec.response(flow)
        rec.done()
    (r,) = _records(tmp_path)
    assert (r["decision"], r["approval_id"]) == ("approved", "hold-" + "a" * 32)


async def test_refused_flow_is_recorded(tmp_path: Path) -> None:
    rec = SessionRecorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, jitgate_spool_dir=str(tmp_path))
        flow = tflow.tflow()
        refuse(flow, InvalidToken("token signature is invalid"))
        rec.request(flow)  # already refused: nothing reserved
        await rec.response(flow)
        rec.done()
    (r,) = _records(tmp_path)
    assert (r["status"], r["decision"], r["error"]) == (401, "blocked", "invalid_token")
    assert r["jti"] is None


async def test_blocked_secret_in_request_body_is_not_recorded(tmp_path: Path) -> None:
    rec = SessionRecorder()
    secret = "".join(["AK", "IA"]) + "".join(random.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", k=16))
    with taddons.context(rec) as tctx:
        tctx.configure(rec, jitgate_spool_dir=str(tmp_path))
        flow = _rerank_flow(_claims(), "x", ["my key is " + secret])
        flow.request.content = json.dumps({"query": "find " + secret, "documents": ["my key is " + secret]}).encode()
        meta.state_of(flow).findings = [
            Finding(
                type="aws_access_key", kind="secret", location="request.body", action="block", tag="a1b2c3d4e5",
                offset=10, length=20, encoding="raw",
            ),
            Finding(type="aws_access_key", location="request.path", action="block", tag="a1b2c3d4e5"),
        ]
        _answer(flow)
        refuse(flow, InvalidToken("placeholder"), extra=None)
        meta.state_of(flow).decision = "blocked"
        await rec.response(flow)
        rec.done()
    (r,) = _records(tmp_path)
    assert secret not in json.dumps(r)
    assert r["request_body"] is None and r["rerank_query"] is None
    assert r["findings"][0] == {
        "type": "aws_access_key",
        "kind": "secret",
        "location": "request.body",
        "action": "block",
        "tag": "a1b2c3d4e5",
    }
    assert r["path"] == "[withheld]"
    assert r["doc_sha256"] == [sha256_text("my key is " + secret)]


async def test_store_answer_keeps_only_visible_fields_and_no_vectors(tmp_path: Path) -> None:
    rec = SessionRecorder()
    rng = random.Random(3)
    qvec = [rng.uniform(-1, 1) for _ in range(32)]
    with taddons.context(rec) as tctx:
        tctx.configure(rec, jitgate_spool_dir=str(tmp_path))
        flow = tflow.tflow()
        flow.request.method = "POST"
        flow.request.path = "/api/v1/collections/candidates/query"
        flow.request.content = json.dumps({"query_embeddings": [qvec], "n_results": 2}).encode()
        meta.state_of(flow).claims = _claims(fields=("ids", "documents", "distances"))
        meta.state_of(flow).operation = "query"
        meta.state_of(flow).collection = "candidates"
        meta.state_of(flow).inspected = ["request", "response"]
        rec.request(flow)
        assert rec.spool is not None and meta.state_of(flow).spool_reserved > 0
        flow.response = tflow.tresp()
        flow.response.content = json.dumps(
            {
                "ids": [["a", "b"]],
                "documents": [["da", "db"]],
                "metadatas": [[{"owner": "x"}, {}]],
                "embeddings": [[qvec, qvec]],
                "distances": [[0.1, 0.2]],
            }
        ).encode()
        await rec.response(flow)
        rec.done()
    (r,) = _records(tmp_path)
    assert r["collection"] == "candidates" and r["operation"] == "query"
    text = json.dumps(r)
    assert str(qvec[0]) not in text
    assert "owner" not in r["response_body"] and "embeddings" not in r["response_body"]
    assert json.loads(r["response_body"])["distances"] == [[0.1, 0.2]]
    assert r["embeddings"] == [
        {"location": "request.query_embeddings[0]", "dim": 32, "sha256": r["embeddings"][0]["sha256"]}
    ]
    assert r["doc_count"] is None


async def test_spool_full_refuses_before_forwarding(tmp_path: Path) -> None:
    rec = SessionRecorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, jitgate_spool_dir=str(tmp_path), jitgate_spool_max_bytes=1000, jitgate_record_body_cap=64)
        flow = _rerank_flow(_claims(), "x", ["d"])
        rec.request(flow)
        assert flow.response is not None and flow.response.status_code == 503
        assert json.loads(flow.response.content)["code"] == "audit_unavailable"
        assert meta.refused(flow)
        rec.done()


async def test_audit_not_required_lets_flows_through(tmp_path: Path) -> None:
    rec = SessionRecorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, jitgate_spool_dir=str(tmp_path), jitgate_spool_max_bytes=1000, jitgate_audit_required=False)
        flow = _rerank_flow(_claims(), "x", ["d"])
        rec.request(flow)
        assert flow.response is None
        rec.done()


async def test_write_failure_withholds_the_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = SessionRecorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, jitgate_spool_dir=str(tmp_path))
        flow = _rerank_flow(_claims(), "x", ["d"])
        rec.request(flow)
        _answer(flow)

        def broken(line: bytes, *, reserved: int = 0) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(rec.spool, "append", broken)
        await rec.response(flow)
        assert flow.response.status_code == 503
        assert json.loads(flow.response.content)["code"] == "audit_unavailable"
        assert b"relevance_score" not in flow.response.content
        assert rec.write_failures == 1
        rec.done()


async def test_a_record_waits_for_a_busy_segment_off_the_event_loop(tmp_path: Path) -> None:
    """The fast path writes on the loop; while the uploader holds the segment, the writer thread waits."""
    rec = SessionRecorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, jitgate_spool_dir=str(tmp_path))
        assert rec.spool is not None
        first, second = (_rerank_flow(_claims(), "x", ["d"]) for _ in range(2))
        for f in (first, second):
            rec.request(f)
            _answer(f)
        await rec.response(first)  # opens the segment (writer thread)
        assert rec.spool.records == 1
        rec.spool._lock.acquire()  # as if a rotation were fsyncing
        try:
            task = asyncio.ensure_future(rec.response(second))
            for _ in range(20):
                await asyncio.sleep(0.01)  # the loop keeps running: nothing waits on it
            assert not task.done() and rec.spool.records == 1  # the answer waits for its record
        finally:
            rec.spool._lock.release()
        await asyncio.wait_for(task, 5)
        assert rec.spool.records == 2 and second.response.status_code == 200
        rec.done()


async def test_text_that_is_no_unicode_is_recorded_as_escapes(tmp_path: Path) -> None:
    """A JSON `\\ud800` and a path that is no UTF-8 reach Python as lone surrogates: still one record."""
    rec = SessionRecorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, jitgate_spool_dir=str(tmp_path))
        flow = _rerank_flow(_claims(), "x", [])
        flow.request.content = b'{"query": "q \\ud800", "documents": ["ok", "\\udfff lone"]}'
        flow.request.path = "/v2/rerank/\udcff"  # how mitmproxy decodes the byte 0xff in a path
        rec.request(flow)
        _answer(flow)
        await rec.response(flow)
        rec.done()
        assert rec.write_failures == 0 and flow.response.status_code == 200
        [record] = _records(tmp_path)
        assert record["rerank_query"] == "q \\ud800" and record["path"] == "/v2/rerank/\\udcff"
        assert json.loads(record["request_body"])["query"] == "q \ud800"  # the body stays JSON, same value
        assert record["doc_count"] == 2 and len(set(record["doc_sha256"])) == 2


async def test_an_upstream_failing_after_its_headers_is_recorded_once(tmp_path: Path) -> None:
    """`response` never runs for it (mitmproxy goes to `error`): the record is taken there, once."""
    rec = SessionRecorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, jitgate_spool_dir=str(tmp_path))
        cut = _rerank_flow(_claims(), "x", ["d"])
        rec.request(cut)
        _answer(cut)  # the headers arrived...
        cut.error = flow_mod.Error("peer closed connection without sending complete message body")
        await rec.error(cut)  # ...then the body broke off
        done = _rerank_flow(_claims(), "x", ["d"])
        rec.request(done)
        _answer(done)
        await rec.response(done)
        done.error = flow_mod.Error("client disconnected")
        await rec.error(done)  # after its record: no second one
        rec.done()
        records = _records(tmp_path)
        assert [(r["flow_id"], r["status"], r["error"]) for r in records] == [
            (cut.id, 0, "upstream_error"),  # no whole answer, as when none came at all
            (done.id, 200, None),
        ]


async def test_upstream_error_is_recorded(tmp_path: Path) -> None:
    rec = SessionRecorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, jitgate_spool_dir=str(tmp_path))
        flow = tflow.tflow(err=True)
        rec.request(flow)
        await rec.error(flow)
        rec.done()
    (r,) = _records(tmp_path)
    assert (r["status"], r["error"], r["decision"]) == (0, "upstream_error", "blocked")


async def test_killed_flow_is_recorded_as_killed(tmp_path: Path) -> None:
    rec = SessionRecorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, jitgate_spool_dir=str(tmp_path))
        flow = tflow.tflow()
        rec.request(flow)
        flow.kill()
        await rec.error(flow)
        rec.done()
    (r,) = _records(tmp_path)
    assert (r["status"], r["error"]) == (0, "flow_killed")


@pytest.mark.parametrize(
    ("option", "value"),
    [("jitgate_gateway_id", "gw/../x"), ("jitgate_spool_max_bytes", 0), ("jitgate_fsync_ms", 0)],
)
async def test_bad_options_stop_the_start(tmp_path: Path, option: str, value: object) -> None:
    rec = SessionRecorder()
    with taddons.context(rec) as tctx, pytest.raises(exceptions.OptionsError):
        tctx.configure(rec, jitgate_spool_dir=str(tmp_path), **{option: value})
    rec.done()


class _S3:
    """The bucket, as put_object's calls: key -> body."""

    def __init__(self) -> None:
        self.shipped: dict[str, bytes] = {}

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, ContentType: str) -> None:
        self.shipped[Key] = Body


async def test_leftovers_are_shipped_at_start(tmp_path: Path) -> None:
    s3 = _S3()
    shipped = s3.shipped
    (tmp_path / "open").mkdir()
    (tmp_path / "open" / "20270115T080000.000000Z-000001-0a0b0c0d.jsonl").write_bytes(b'{"record_id":"x"}\n')
    rec = SessionRecorder(s3=s3)
    with taddons.context(rec) as tctx:
        tctx.configure(rec, jitgate_spool_dir=str(tmp_path), jitgate_bucket="audit", jitgate_gateway_id="gw1")
        rec.done()
    assert list(shipped) == ["sessions/dt=2027-01-15/hour=08/gw1-20270115T080000.000000Z-000001-0a0b0c0d.jsonl.gz"]


@pytest.mark.parametrize("durable", ["{spool}", "{spool}/shared", "{spool}/.."])
async def test_a_durable_spool_that_overlaps_the_spool_stops_the_start(tmp_path: Path, durable: str) -> None:
    spool = tmp_path / "spool"
    rec = SessionRecorder()
    with taddons.context(rec) as tctx, pytest.raises(exceptions.OptionsError, match="jitgate_durable_spool"):
        tctx.configure(rec, jitgate_spool_dir=str(spool), jitgate_durable_spool=durable.format(spool=spool))
    rec.done()


async def test_a_durable_spool_that_takes_no_files_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "efs").write_text("a file where the mount should be")
    rec = SessionRecorder()
    with taddons.context(rec) as tctx, pytest.raises(exceptions.OptionsError, match="jitgate_durable_spool: cannot"):
        tctx.configure(rec, jitgate_spool_dir=str(tmp_path / "spool"), jitgate_durable_spool=str(tmp_path / "efs"))
    rec.done()
    # The spool it had locked is free again for the start that follows the fix.
    again = SessionRecorder()
    with taddons.context(again) as tctx:
        tctx.configure(again, jitgate_spool_dir=str(tmp_path / "spool"))
        again.done()


async def test_what_a_stopped_gateway_left_in_the_durable_spool_is_shipped_at_start(tmp_path: Path) -> None:
    s3 = _S3()
    shipped = s3.shipped
    name = "20270115T080000.000000Z-000001-0a0b0c0d.jsonl"
    (tmp_path / "efs" / "gw-gone").mkdir(parents=True)
    (tmp_path / "efs" / "gw-gone" / name).write_bytes(b'{"record_id":"x"}\n')
    rec = SessionRecorder(s3=s3)
    with taddons.context(rec) as tctx:
        tctx.configure(rec, jitgate_spool_dir=str(tmp_path / "spool"), jitgate_bucket="audit",
                       jitgate_gateway_id="gw1", jitgate_durable_spool=str(tmp_path / "efs"))
        for _ in range(100):
            if shipped:
                break
            await asyncio.sleep(0.05)
        rec.done()
    assert list(shipped) == [f"sessions/dt=2027-01-15/hour=08/gw-gone-{name.removesuffix('.jsonl')}.jsonl.gz"]
    assert list((tmp_path / "efs").iterdir()) == []


@pytest.mark.parametrize(
    ("where", "action", "request_kept", "response_kept"),
    [
        ("request.body", "mask", True, True),
        ("request.body", "block", False, True),
        ("response.body", "allow", True, False),
        ("response.body", "mask", True, True),
        ("body", "allow", False, False),  # a location we do not know: withhold both
        ("request.header:x-note", "block", True, True),  # headers are never recorded anyway
        ("request.path", "block", True, True),
    ],
)
async def test_bodies_with_unmasked_findings_are_withheld(
    tmp_path: Path, where: str, action: str, request_kept: bool, response_kept: bool
) -> None:
    rec = SessionRecorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, jitgate_spool_dir=str(tmp_path))
        flow = _rerank_flow(_claims(), "x", ["d"])
        meta.state_of(flow).findings = [Finding(type="email", location=where, action=action)]
        rec.request(flow)
        _answer(flow)
        await rec.response(flow)
        rec.done()
    (r,) = _records(tmp_path)
    assert (r["request_body"] is not None, r["response_body"] is not None) == (request_kept, response_kept)
    assert (r["rerank_query"] is not None) == request_kept


async def test_spool_dir_in_use_stops_the_start(tmp_path: Path) -> None:
    first, second = SessionRecorder(), SessionRecorder()
    with taddons.context(first) as tctx:
        tctx.configure(first, jitgate_spool_dir=str(tmp_path))
        with taddons.context(second) as tctx2, pytest.raises(exceptions.OptionsError, match="in use"):
            tctx2.configure(second, jitgate_spool_dir=str(tmp_path))
        first.done()


async def test_after_a_failed_write_flows_are_refused_until_a_write_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jitgate.spool as spool_mod

    rec = SessionRecorder()
    real_write = spool_mod.os.write

    def disk_full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    with taddons.context(rec) as tctx:
        tctx.configure(rec, jitgate_spool_dir=str(tmp_path))
        monkeypatch.setattr(spool_mod.os, "write", disk_full)
        first = _rerank_flow(_claims(), "x", ["d"])
        rec.request(first)
        assert first.response is None  # nothing known to be wrong yet: forwarded
        _answer(first)
        await rec.response(first)
        assert first.response.status_code == 503  # its answer is withheld
        second = _rerank_flow(_claims(), "x", ["d"])
        rec.request(second)
        assert second.response is not None and second.response.status_code == 503  # refused before forwarding
        await rec.response(second)  # its refusal cannot be recorded either
        assert rec.spool is not None and not rec.spool.probe()
        monkeypatch.setattr(spool_mod.os, "write", real_write)  # space again
        assert rec.spool.probe()  # the uploader thread probes on every tick
        third = _rerank_flow(_claims(), "x", ["d"])
        rec.request(third)
        assert third.response is None
        rec.done()
    assert _records(tmp_path) == []


@pytest.mark.parametrize("inspected", [[], ["request"], ["response"]])
async def test_bodies_leak_guard_did_not_mask_are_not_recorded(tmp_path: Path, inspected: list[str]) -> None:
    """A body is recorded only once leak_guard masked it as it stands (a flow refused before its body
    was read, a body no parser reads as UTF-8): the record never holds what nobody inspected."""
    key = "AKIA" + "".join(random.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))
    rec = SessionRecorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, jitgate_spool_dir=str(tmp_path))
        flow = _rerank_flow(_claims(), "x", [key])
        flow.request.content = json.dumps({"query": key, "documents": [key]}).encode()
        meta.state_of(flow).inspected = inspected
        rec.request(flow)
        _answer(flow)
        await rec.response(flow)
        rec.done()
    (r,) = _records(tmp_path)
    assert (key in json.dumps(r)) == ("request" in inspected)  # marked inspected: taken as masked
    assert (r["request_body"] is not None, r["rerank_query"] is not None) == (("request" in inspected),) * 2
    assert (r["response_body"] is not None) == ("response" in inspected)


async def test_fragment_is_not_recorded(tmp_path: Path) -> None:
    rec = SessionRecorder()
    with taddons.context(rec) as tctx:
        tctx.configure(rec, jitgate_spool_dir=str(tmp_path))
        flow = _rerank_flow(_claims(), "x", ["d"])
        flow.request.path = "/v2/rerank#access_token=eyJhbGciOiJFUzI1NiJ9.e30.c2ln"
        rec.request(flow)
        _answer(flow)
        await rec.response(flow)
        rec.done()
    (r,) = _records(tmp_path)
    assert r["path"] == "/v2/rerank"
