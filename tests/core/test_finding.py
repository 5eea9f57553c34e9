"""One finding has one type (jitgate.records.Finding) on every path: the inspection makes it, the
flow state and its flow-file form keep it, a 403 and a hold summary show part of it, the approval
rules and the record read it. And one decision rule (`decision_of`) for the record and the log."""

from __future__ import annotations

import json
import random
import secrets
import typing

import pytest

from jitgate import approvals, flow_state, holds, leaks, recording, records
from jitgate.flow_state import FlowState
from jitgate.inspect import Scanner, actions
from jitgate.policy import MaskProfile
from jitgate.records import Decision, Finding, decision_of
from tests.inspect import corpus


def _secret() -> str:
    return corpus.PREFIXED["github_pat"](random.Random(secrets.randbits(64)))


@pytest.fixture(scope="module")
def scanner() -> Scanner:
    return Scanner(secrets.token_bytes(32))


def _found(scanner: Scanner, secret: str) -> tuple[bytes, Finding]:
    raw = json.dumps({"query": "q", "documents": ["fine", f"leak {secret}"]}).encode()
    plan = actions.plan(MaskProfile(), "request")
    (finding,) = leaks.finding_records(plan, "request.body", scanner.scan(raw).findings, raw)
    return raw, finding


def test_a_scan_makes_the_one_finding_type_with_where_it_sat(scanner: Scanner) -> None:
    secret = _secret()
    raw, f = _found(scanner, secret)
    assert isinstance(f, Finding)
    assert (f.type, f.kind, f.location, f.action, f.path) == ("github_pat", "secret", "request.body", "block",
                                                              "$.documents[1]")
    assert f.offset is not None and f.length is not None
    assert raw[f.offset : f.offset + f.length].decode().endswith(secret[-8:])
    assert secret not in repr(f) and secret not in json.dumps(f.plain())


def test_the_record_keeps_the_columns_and_never_the_place_in_the_buffer(scanner: Scanner) -> None:
    _, f = _found(scanner, _secret())
    written = json.loads(f.model_dump_json())
    assert set(written) == {"type", "kind", "location", "action", "tag"}
    column = dict(records.COLUMNS)["findings"]
    assert column == "array<struct<" + ",".join(f"{k}:string" for k in written) + ">>"


def test_the_answer_and_the_flow_file_forms(scanner: Scanner) -> None:
    _, f = _found(scanner, _secret())
    assert f.public() == {"type": "github_pat", "where": "request.body", "path": "$.documents[1]",
                          "offset": f.offset, "length": f.length, "tag": f.tag}
    assert leaks.public(f) == f.public()
    assert Finding.from_plain(f.plain()) == f
    bare = Finding(type="email", location="response.body", action="mask")
    assert bare.public() == {"type": "email", "where": "response.body"}
    assert Finding.from_plain(bare.plain()) == bare


@pytest.mark.parametrize(
    "plain",
    [{}, {"type": "email"}, {"type": "email", "where": "q"}, {"type": 3, "where": "q", "action": "mask"},
     {"type": "email", "where": "q", "action": "mask", "offset": "x"}],
)
def test_a_malformed_flow_file_finding_reads_as_none(plain: dict[str, object]) -> None:
    assert Finding.from_plain(plain) is None
    state = FlowState.from_plain({flow_state.FINDINGS: [plain]})
    assert state.findings == []


def test_a_flow_file_finding_keeps_only_the_finding_s_own_keys() -> None:
    read = Finding.from_plain({"type": "email", "where": "q", "action": "mask", "value": "the secret"})
    assert read == Finding(type="email", location="q", action="mask") and "the secret" not in repr(read)


def test_every_path_holds_the_same_type() -> None:
    hints = {
        "flow state": typing.get_type_hints(FlowState)["findings"],
        "record": typing.get_type_hints(records.SessionRecord)["findings"],
        "approval facts": typing.get_type_hints(approvals.RequestFacts)["findings"],
        "hold facts": typing.get_type_hints(holds.request_facts)["findings"],
        "scan results": typing.get_type_hints(leaks.finding_records)["return"],
        "header scans": typing.get_type_hints(leaks.HeaderScan)["records"],
    }
    for where, hint in hints.items():
        assert typing.get_args(hint)[0] is Finding, where


def test_the_record_of_a_state_carries_its_findings_as_they_are(scanner: Scanner) -> None:
    _, f = _found(scanner, _secret())
    state = FlowState(findings=[f], decision=Decision.BLOCKED, error="leak_blocked")
    ex = recording.Exchange(flow_id="f1", method="POST", host="h", path="/v2/rerank", client=None, started=1.0,
                            ended=None, request_bytes=0, request_content=None)
    rec = recording.record_of(state, ex, gateway="g", body_cap=100, now=2.0)
    assert rec.findings == (f,) and rec.findings[0] is f


@pytest.mark.parametrize(
    ("decided", "error", "expected"),
    [
        (None, None, Decision.ALLOWED),
        (None, "leak_blocked", Decision.BLOCKED),
        (Decision.MASKED, None, Decision.MASKED),
        (Decision.DENIED, "approval_denied", Decision.DENIED),
        (Decision.HELD, None, Decision.HELD),
    ],
)
def test_decision_of(decided: Decision | None, error: str | None, expected: Decision) -> None:
    assert decision_of(decided, error) is expected
