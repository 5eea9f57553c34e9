"""The Postgres path's records (one per statement, spool → S3, no literal, value or token) and limits."""

from __future__ import annotations

import gzip
import json
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any

import boto3

from jitgate.devstack.aws import Stack
from jitgate.devstack.postgres import Postgres
from tests.pg.conftest import LIMITED, READER


def _psql(env: dict[str, str], *sql: str) -> subprocess.CompletedProcess[str]:
    argv = ["psql", "-X", "-At"]
    for s in sql:
        argv += ["-c", s]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def _records(stack: Stack, jti: str, want: int) -> list[dict[str, Any]]:
    s3 = boto3.client("s3", endpoint_url=stack.endpoint_url, region_name=stack.region)
    found: list[dict[str, Any]] = []
    for _ in range(150):
        found = []
        for obj in s3.list_objects_v2(Bucket=stack.bucket, Prefix="sessions/").get("Contents", []):
            body = s3.get_object(Bucket=stack.bucket, Key=obj["Key"])["Body"].read()
            text = gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body
            found += [r for r in map(json.loads, text.splitlines()) if r.get("jti") == jti]
        if len(found) >= want:
            return found
        time.sleep(0.2)
    return found


def test_one_record_per_statement(
    pg_mint: Callable[..., dict[str, Any]], pg_env: Callable[..., dict[str, str]], pg_stack: Stack,
    postgres: Postgres,
) -> None:
    minted = pg_mint(READER, job="rerank-nightly")
    secret_literal = f"s{uuid.uuid4().hex}"
    out = _psql(
        pg_env(minted["token"]),
        f"SELECT id, body FROM candidates WHERE body <> '{secret_literal}' ORDER BY id LIMIT 5",
        "SELECT owner_email FROM candidates",
    )
    assert "jitgate column_not_allowed" in out.stderr
    records = _records(pg_stack, minted["jti"], 2)
    assert len(records) == 2, records
    ok = next(r for r in records if r["decision"] == "masked")  # the bodies hold e-mails: masked
    assert {f["location"] for f in ok["findings"]} == {"column:body"}
    assert {f["type"] for f in ok["findings"]} == {"email"} and all(f["action"] == "mask" for f in ok["findings"])
    refused = next(r for r in records if r["decision"] == "blocked")
    assert ok["conn"] == "pg-dev" and ok["sub"] == READER and ok["job"] == "rerank-nightly"
    assert ok["db_user"] == "reranker" and ok["operation"] == "select"
    assert ok["tables"] == ["public.candidates"]
    assert ok["columns"] == ["public.candidates.body", "public.candidates.id"]
    assert ok["statement"] == "SELECT id , body FROM candidates WHERE body <> ? ORDER BY id LIMIT ?"
    assert ok["statement_fingerprint"] and ok["rows"] == 5 and ok["response_bytes"] > 0
    assert refused["error"] == "column_not_allowed" and refused["columns"] == ["public.candidates.owner_email"]
    text = json.dumps(records)
    assert secret_literal not in text and minted["token"] not in text
    assert "reranking notes" not in text  # no row value
    assert minted["token"] not in postgres.log_text()  # the token never reaches the server


def test_max_requests_counts_statements(
    pg_mint: Callable[..., dict[str, Any]], pg_env: Callable[..., dict[str, str]]
) -> None:
    env = pg_env(pg_mint(LIMITED)["token"])
    # One Query message of two statements counts two; the third statement is the last one allowed.
    out = _psql(env, "SELECT 1; SELECT 2", "SELECT 3", "SELECT 4")
    assert out.stdout.split() == ["1", "2", "3"], out
    assert "jitgate request_limit_exceeded" in out.stderr


def test_rows_past_the_limit_are_an_error(
    pg_mint: Callable[..., dict[str, Any]], pg_env: Callable[..., dict[str, str]]
) -> None:
    env = pg_env(pg_mint(READER)["token"])  # the reader grant: max_documents 1000 rows a statement
    out = _psql(env, "SELECT g FROM generate_series(1, 5000) g", "SELECT count(*) FROM candidates")
    assert "jitgate row_limit_exceeded" in out.stderr, out.stderr
    assert "5000" not in out.stdout.split()  # never a silent cut: no partial answer printed as complete
    assert out.stdout.split()[-1] == "24"  # and the connection goes on
