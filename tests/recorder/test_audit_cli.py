from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from jitgate.cli import _register, app
from jitgate.commands import audit as audit_cmd
from jitgate.commands.sessions import export_flows
from jitgate.digest import sha256_text
from tests.recorder.test_audit import DOCS, _FakeAthena, write_cache

_register()
runner = CliRunner()


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """test_audit's records dated yesterday and today (UTC): the CLI runs each named query with its
    own window back from today (30 days, 7 for token events), so fixed dates would fall out of it."""
    return write_cache(tmp_path, datetime.now(UTC).date() - timedelta(days=1))


def _json_rows(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_who_reranked_by_text_and_by_hash(cache: Path) -> None:
    args = ["audit", "who-reranked", "--no-sync", "--cache", str(cache), "--format", "json"]
    by_text = runner.invoke(app, [*args[:2], DOCS[0], *args[2:]])
    by_hash = runner.invoke(app, [*args[:2], sha256_text(DOCS[0]), *args[2:]])
    assert by_text.exit_code == 0, by_text.output
    assert _json_rows(by_text.output) == _json_rows(by_hash.output)
    assert sorted(r["sub"] for r in _json_rows(by_text.output)) == ["alice", "bob"]


def test_sql_prints_a_table(cache: Path) -> None:
    res = runner.invoke(
        app,
        [
            "audit",
            "sql",
            "SELECT sub, count(*) AS n FROM sessions_unique GROUP BY sub ORDER BY sub",
            "--no-sync",
            "--cache",
            str(cache),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "alice" in res.output and "carol" in res.output and "┃" in res.output


def test_bad_sql_is_one_line_and_exit_1(cache: Path) -> None:
    res = runner.invoke(app, ["audit", "sql", "SELEC nonsense", "--no-sync", "--cache", str(cache)])
    assert res.exit_code == 1 and "query failed" in res.output


def test_named_queries_from_the_bucket(tmp_path: Path, cache: Path) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="audit")
        for path in cache.rglob("*"):
            if path.is_file():
                s3.upload_file(str(path), "audit", path.relative_to(cache).as_posix())
        res = runner.invoke(
            app,
            ["audit", "tokens-issued-vs-used", "--bucket", "audit", "--cache", str(tmp_path / "c"), "--format", "json"],
        )
    assert res.exit_code == 0, res.output
    assert {r["jti"]: r["requests"] for r in _json_rows(res.output)} == {
        "jti-alice-1": 1,
        "jti-bob-1": 2,
        "jti-dave-1": 0,
    }


def test_export_by_jti_writes_a_flow_file_mitmproxy_reads(tmp_path: Path, cache: Path) -> None:
    out = tmp_path / "flows.mitm"
    res = runner.invoke(
        app, ["sessions", "export", "--jti", "jti-bob-1", "-o", str(out), "--no-sync", "--cache", str(cache)]
    )
    assert res.exit_code == 0, res.output
    from mitmproxy import io

    with out.open("rb") as fh:
        flows = list(io.FlowReader(fh).stream())
    assert sorted(f.id for f in flows) == ["f2", "f3"]
    by_id = {f.id: f for f in flows}
    assert by_id["f3"].response.status_code == 403
    assert by_id["f3"].metadata["jitgate"]["findings"][0]["type"] == "aws_access_key"
    assert by_id["f2"].request.path == "/v2/rerank" and by_id["f2"].metadata["jitgate"]["sub"] == "bob"
    # the real mitmdump opens it
    mitmdump = Path(sys.executable).with_name("mitmdump")
    shown = subprocess.run(
        [str(mitmdump), "-n", "-r", str(out), "--flow-detail", "1"], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0 and "/v2/rerank" in shown.stdout


def test_export_needs_exactly_one_selector(cache: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["sessions", "export", "-o", str(tmp_path / "x"), "--no-sync", "--cache", str(cache)])
    assert res.exit_code != 0
    res = runner.invoke(
        app, ["sessions", "export", "--flow", "nope", "-o", str(tmp_path / "x"), "--no-sync", "--cache", str(cache)]
    )
    assert res.exit_code == 1


def test_export_flow_without_response_has_error(tmp_path: Path) -> None:
    rec = {
        "flow_id": "f9",
        "ts": "2027-01-15T08:00:00.000Z",
        "method": "POST",
        "host": "h",
        "path": "/x",
        "status": 0,
        "error": "upstream_error",
        "client": "[::1]:5000",
    }
    out = tmp_path / "one.mitm"
    assert export_flows([rec], out) == 1
    from mitmproxy import io

    with out.open("rb") as fh:
        (flow,) = io.FlowReader(fh).stream()
    assert flow.response is None and flow.error.msg == "upstream_error"
    assert flow.client_conn.peername == ("::1", 5000)


def test_sql_on_athena_gets_the_dedup_cte(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeAthena()
    monkeypatch.setattr(audit_cmd.Source, "client", lambda self, service: fake)
    res = runner.invoke(app, ["audit", "sql", "SELECT sub FROM sessions_unique", "--athena", "--format", "json"])
    assert res.exit_code == 0, res.output
    assert fake.kwargs["QueryString"].startswith("WITH sessions_unique AS (")
    assert fake.kwargs["QueryString"].endswith("SELECT sub FROM sessions_unique")
    assert fake.kwargs["WorkGroup"] == "jitgate" and "ExecutionParameters" not in fake.kwargs
    assert _json_rows(res.output) == [{"sub": "alice", "jti": "j1"}]
