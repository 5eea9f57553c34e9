from __future__ import annotations

import gzip
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from jitgate import audit
from jitgate.digest import sha256_text
from jitgate.events import TokenEvent
from jitgate.records import Finding, RankEntry, SessionRecord, record_id

DOCS = ["refund policy for damaged goods", "shipping times to Norway", "warranty terms"]


def _rec(flow: str, sub: str, jti: str, **over: Any) -> SessionRecord:
    base: dict[str, Any] = dict(
        record_id=record_id("gw1", flow),
        ts="2027-01-15T08:00:00.000Z",
        gateway="gw1",
        flow_id=flow,
        jti=jti,
        sub=sub,
        conn="cohere-prod",
        method="POST",
        host="api.cohere.com",
        path="/v2/rerank",
        operation="rerank",
        status=200,
        decision="allowed",
    )
    base.update(over)
    return SessionRecord(**base)


def _write_segment(cache: Path, key: str, records: list[SessionRecord]) -> None:
    path = cache / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(b"".join(r.to_json_line() for r in records)))


FIXTURE_DAY = date(2027, 1, 15)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return write_cache(tmp_path, FIXTURE_DAY)


def write_cache(tmp_path: Path, day0: date) -> Path:
    """The audit cache of the tests: sessions on `day0` and the day after, token events on `day0`."""
    d0, d1 = day0.isoformat(), (day0 + timedelta(days=1)).isoformat()
    alice = _rec(
        "f1",
        "alice",
        "jti-alice-1",
        ts=f"{d0}T08:00:00.000Z",
        rerank_query="refund",
        doc_count=2,
        doc_sha256=(sha256_text(DOCS[0]), sha256_text(DOCS[1])),
        ranking=(RankEntry(index=0, score=0.9), RankEntry(index=1, score=0.1)),
    )
    bob = _rec(
        "f2",
        "bob",
        "jti-bob-1",
        ts=f"{d0}T08:00:00.000Z",
        rerank_query="warranty",
        doc_count=2,
        doc_sha256=(sha256_text(DOCS[2]), sha256_text(DOCS[0])),
    )
    leak = _rec(
        "f3",
        "bob",
        "jti-bob-1",
        ts=f"{d0}T08:00:00.000Z",
        status=403,
        decision="blocked",
        error="leak_blocked",
        findings=(
            Finding(type="aws_access_key", kind="secret", location="request.body", action="block", tag="0a1b2c3d4e"),
        ),
    )
    held = _rec(
        "f4",
        "carol",
        "jti-carol-1",
        ts=f"{d1}T09:00:00.000Z",
        operation="delete",
        collection="candidates",
        decision="approved",
        apv="apv-1",
        path="/api/v1/collections/candidates/delete",
    )
    _write_segment(tmp_path, f"sessions/dt={d0}/hour=08/gw1-a.jsonl.gz", [alice, bob])
    # the same record shipped twice (a re-shipped segment under another key): counted once
    _write_segment(tmp_path, f"sessions/dt={d0}/hour=08/gw1-b.jsonl.gz", [alice, leak])
    _write_segment(tmp_path, f"sessions/dt={d1}/hour=09/gw1-c.jsonl.gz", [held])
    sql = dict(
        conn="pg-dev", method="SQL", host="127.0.0.1", path="/ranking", operation="select",
        ts=f"{d1}T10:00:00.000Z",
    )
    reads = [
        _rec("p1", "erin", "jti-erin-1", **sql, tables=("public.candidates",), rows=5,
             statement="SELECT id FROM candidates LIMIT ?"),
        _rec("p2", "erin", "jti-erin-1", **sql, tables=("public.candidates", "public.audit_notes"), rows=0,
             decision="blocked", status=403, error="table_not_allowed"),
    ]
    _write_segment(tmp_path, f"sessions/dt={d1}/hour=10/gw1-pg-d.jsonl.gz", reads)
    events = tmp_path / "token-events" / f"dt={d0}"
    events.mkdir(parents=True)
    lines = [
        TokenEvent(
            event_time=f"{d0}T07:59:00.000Z",
            event_type="issued",
            broker="b",
            status=200,
            sub=s,
            jti=j,
            conn="cohere-prod",
            operations=["rerank"],
        ).line()
        for s, j in (("alice", "jti-alice-1"), ("bob", "jti-bob-1"), ("dave", "jti-dave-1"))
    ]
    (events / "e.jsonl").write_text("".join(lines))
    return tmp_path


# The fixture's partitions lie in 2027: a window this wide holds them whatever day the test runs.
_ALL_DAYS = 100_000


def _run(cache: Path, name: str, **args: str) -> list[dict[str, Any]]:
    """The named query's one text (the template's, the CLI's) on DuckDB."""
    q = audit.NAMED_QUERIES[name]
    res = audit.run_duckdb(audit.connect(cache), q.athena_sql(days=_ALL_DAYS), audit.bind(q, args))
    return [dict(zip(res.columns, row, strict=True)) for row in res.rows]


def test_who_reranked_names_user_token_and_position(cache: Path) -> None:
    rows = _run(cache, "who-reranked", sha256=audit.fingerprint_arg(DOCS[0]))
    assert sorted((r["sub"], r["jti"], r["doc_index"]) for r in rows) == [
        ("alice", "jti-alice-1", 0),
        ("bob", "jti-bob-1", 1),
    ]
    assert _run(cache, "who-reranked", sha256=sha256_text("never sent")) == []


def test_who_read_tables_per_day(cache: Path) -> None:
    rows = _run(cache, "who-read-tables")
    got = {(r["day"], r["sub"], r["table_name"]): (r["statements"], r["rows"], r["refused"]) for r in rows}
    assert got == {
        ("2027-01-16", "erin", "public.audit_notes"): (1, 0, 1),
        ("2027-01-16", "erin", "public.candidates"): (2, 5, 1),
    }


def test_fingerprint_arg_accepts_text_or_hex() -> None:
    h = sha256_text(DOCS[1])
    assert audit.fingerprint_arg(DOCS[1]) == h == audit.fingerprint_arg(h.upper())


def test_user_activity_per_day_drops_duplicates(cache: Path) -> None:
    rows = {(r["day"], r["sub"]): r for r in _run(cache, "user-activity")}
    assert set(rows) == {
        ("2027-01-15", "alice"), ("2027-01-15", "bob"), ("2027-01-16", "carol"), ("2027-01-16", "erin"),
    }
    assert (rows[("2027-01-16", "erin")]["requests"], rows[("2027-01-16", "erin")]["blocked"]) == (2, 1)
    assert rows[("2027-01-15", "alice")]["requests"] == 1
    assert (rows[("2027-01-15", "bob")]["requests"], rows[("2027-01-15", "bob")]["blocked"]) == (2, 1)
    assert rows[("2027-01-16", "carol")]["held"] == 1


def test_blocked_leaks_and_held_operations(cache: Path) -> None:
    (leak,) = _run(cache, "blocked-leaks")
    assert (leak["sub"], leak["finding"], leak["action"]) == ("bob", "aws_access_key", "block")
    (held,) = _run(cache, "held-operations")
    assert (held["sub"], held["apv"], held["decision"], held["operation"]) == ("carol", "apv-1", "approved", "delete")


def test_tokens_issued_vs_used(cache: Path) -> None:
    rows = {r["jti"]: r for r in _run(cache, "tokens-issued-vs-used")}
    assert {j: r["requests"] for j, r in rows.items()} == {"jti-alice-1": 1, "jti-bob-1": 2, "jti-dave-1": 0}


def test_athena_text_reads_only_recent_partitions(cache: Path) -> None:
    q = audit.NAMED_QUERIES["user-activity"]
    con = audit.connect(cache)
    assert audit.run_duckdb(con, q.athena_sql(days=_ALL_DAYS)).rows
    # the fixture's partitions lie in 2027: a window ending today that starts tomorrow reads none
    assert audit.run_duckdb(con, q.athena_sql(days=-3000)).rows == []


def test_tokens_by_subject_counts_events_per_subject_and_connection(cache: Path) -> None:
    rows = _run(cache, "tokens-by-subject")
    assert {(r["sub"], r["conn"], r["event_type"], r["n"]) for r in rows} == {
        (sub, "cohere-prod", "issued", 1) for sub in ("alice", "bob", "dave")
    }
    q = audit.NAMED_QUERIES["tokens-by-subject"]
    assert audit.run_duckdb(audit.connect(cache), q.athena_sql(days=-3000)).rows == []  # its window is applied


@pytest.mark.parametrize("name", sorted(audit.NAMED_QUERIES))
def test_every_named_query_runs_on_duckdb_as_athena_gets_it(cache: Path, name: str) -> None:
    """One text for both engines: what `jitgate audit` runs is what the template ships to Athena."""
    q = audit.NAMED_QUERIES[name]
    text = q.athena_sql()
    assert audit.SINCE not in text and text.startswith("WITH sessions_unique AS (")
    args = {p: sha256_text(DOCS[0]) for p in q.params}
    assert audit.run_duckdb(audit.connect(cache), q.athena_sql(days=_ALL_DAYS), audit.bind(q, args)).rows


def test_empty_cache_gives_empty_tables(tmp_path: Path) -> None:
    con = audit.connect(tmp_path)
    assert audit.run_duckdb(con, "SELECT count(*) FROM sessions_unique").rows == [(0,)]
    assert _run(tmp_path, "tokens-issued-vs-used") == []


def test_bind_needs_every_parameter() -> None:
    with pytest.raises(ValueError):
        audit.bind(audit.NAMED_QUERIES["who-reranked"], {})


@mock_aws
def test_sync_cache_pulls_only_missing_objects(tmp_path: Path) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="audit")
    s3.put_object(Bucket="audit", Key="sessions/dt=2027-01-15/hour=08/gw1-a.jsonl.gz", Body=b"x")
    s3.put_object(Bucket="audit", Key="token-events/dt=2027-01-15/e.jsonl", Body=b"y")
    s3.put_object(Bucket="audit", Key="elsewhere/z", Body=b"z")
    assert audit.sync_cache(s3, "audit", tmp_path) == 2
    assert audit.sync_cache(s3, "audit", tmp_path) == 0
    assert (tmp_path / "token-events/dt=2027-01-15/e.jsonl").read_bytes() == b"y"
    assert not (tmp_path / "elsewhere").exists()


class _FakeAthena:
    """Records the call and answers like Athena: header row first, strings only."""

    def __init__(self) -> None:
        self.kwargs: dict[str, Any] = {}
        self.polls = 0

    def start_query_execution(self, **kwargs: Any) -> dict[str, str]:
        self.kwargs = kwargs
        return {"QueryExecutionId": "q1"}

    def get_query_execution(self, QueryExecutionId: str) -> dict[str, Any]:
        self.polls += 1
        state = "RUNNING" if self.polls < 2 else "SUCCEEDED"
        return {"QueryExecution": {"Status": {"State": state}}}

    def get_paginator(self, name: str) -> Any:
        page = {
            "ResultSet": {
                "ResultSetMetadata": {"ColumnInfo": [{"Name": "sub"}, {"Name": "jti"}]},
                "Rows": [
                    {"Data": [{"VarCharValue": "sub"}, {"VarCharValue": "jti"}]},
                    {"Data": [{"VarCharValue": "alice"}, {"VarCharValue": "j1"}]},
                ],
            }
        }

        class P:
            def paginate(self, **_: Any) -> list[dict[str, Any]]:
                return [page]

        return P()


def test_run_athena_passes_parameters_and_skips_header() -> None:
    fake = _FakeAthena()
    q = audit.NAMED_QUERIES["who-reranked"]
    res = audit.run_athena(fake, q.athena_sql(), ["ab'c", "ab'c"], workgroup="jitgate", database="jitgate", poll=0)
    assert res == audit.Result(("sub", "jti"), [("alice", "j1")])
    assert fake.kwargs["ExecutionParameters"] == ["'ab''c'", "'ab''c'"]
    assert fake.kwargs["QueryString"].startswith("WITH sessions_unique AS (")


def test_day_prefixes_cover_the_window() -> None:
    from datetime import date

    assert audit.day_prefixes(["sessions/"], days=2, today=date(2027, 3, 1)) == [
        "sessions/dt=2027-02-28/",
        "sessions/dt=2027-03-01/",
    ]


@mock_aws
def test_sync_cache_with_days_pulls_only_recent_partitions(tmp_path: Path) -> None:
    from datetime import date

    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="audit")
    for day in ("2027-02-20", "2027-02-28", "2027-03-01"):
        s3.put_object(Bucket="audit", Key=f"sessions/dt={day}/hour=08/gw1-a.jsonl.gz", Body=b"x")
        s3.put_object(Bucket="audit", Key=f"token-events/dt={day}/e.jsonl", Body=b"y")
    assert audit.sync_cache(s3, "audit", tmp_path, days=2, today=date(2027, 3, 1)) == 4
    assert sorted(p.name for p in (tmp_path / "sessions").iterdir()) == ["dt=2027-02-28", "dt=2027-03-01"]
