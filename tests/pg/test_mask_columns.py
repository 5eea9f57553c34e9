"""A grant's `mask_columns` on the real server: psql and psycopg (text and binary results) see the
columns masked whatever they hold, rows unchanged in number and order; the records count per column."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from jitgate.devstack.aws import Stack
from jitgate.devstack.postgres import Postgres
from tests.pg.conftest import MAINTAINER, MASKED
from tests.pg.test_psycopg import Connect, connect  # noqa: F401  (the fixture)
from tests.pg.test_records_limits import _records

MARK = re.compile(r"\[REDACTED:column:[0-9a-f]{10}\]")


@pytest.mark.parametrize("binary", [False, True])
def test_masked_columns_in_text_and_binary_results(
    binary: bool, connect: Connect, pg_mint: Callable[..., dict[str, Any]], postgres: Postgres  # noqa: F811
) -> None:
    conn = connect(pg_mint(MASKED)["token"], autocommit=True)
    with conn.cursor(binary=binary) as cur:
        # owner_email (text) masked by its origin even under an alias; embedding (vector) masked as NULL.
        cur.execute("SELECT id, owner_email AS contact, embedding, owner_email FROM candidates ORDER BY id")
        rows = cur.fetchall()
    assert [r[0] for r in rows] == list(range(1, 25))  # the rows' number and order unchanged
    assert all(MARK.fullmatch(r[1]) and r[3] == r[1] for r in rows), rows[:3]  # the same value, the same tag
    assert all(r[2] is None for r in rows)
    real = postgres.psql("SELECT count(DISTINCT owner_email) FROM candidates").strip()
    assert len({r[1] for r in rows}) == int(real)  # one tag per distinct value: they correlate, nothing shows
    with conn.cursor(binary=binary) as cur:  # the extended protocol: a parameter, server-side binding
        cur.execute("SELECT c.* FROM candidates c WHERE id = %s", (3,))
        row = cur.fetchone()
    assert row is not None and row[0] == 3 and MARK.fullmatch(row[2]) and row[3] is None
    assert "[REDACTED:email:" in row[1]  # body is not masked whole: the profile still masks the e-mail in it


def test_masked_columns_through_psql(
    pg_mint: Callable[..., dict[str, Any]], pg_env: Callable[..., dict[str, str]], pg_stack: Stack
) -> None:
    minted = pg_mint(MASKED)
    env = pg_env(minted["token"])
    out = subprocess.run(
        ["psql", "-X", "-At", "-F", "|", "-c", "SELECT id, owner_email, embedding FROM candidates WHERE id <= 3"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split("|")[0] for line in lines] == ["1", "2", "3"]
    assert all(MARK.fullmatch(line.split("|")[1]) and line.split("|")[2] == "" for line in lines), lines
    assert "@" not in out.stdout
    for sql in (
        "SELECT id FROM candidates WHERE owner_email LIKE 'a%'",
        "SELECT lower(owner_email) FROM candidates",
        "SELECT x FROM (SELECT owner_email AS x FROM candidates) s",
        "SELECT id FROM candidates ORDER BY embedding <-> '[0,0,0,0,0,0,0,0]' LIMIT 3",
    ):
        refused = subprocess.run(["psql", "-X", "-At", "-c", sql], env=env, capture_output=True, text=True, timeout=60)
        assert "jitgate column_masked" in refused.stderr, (sql, refused.stderr)
    records = _records(pg_stack, minted["jti"], 5)
    ok = next(r for r in records if r["decision"] == "masked")
    assert ok["column_findings"] == [
        {"column_name": "embedding", "type": "column", "kind": "pii", "action": "mask", "count": 3},
        {"column_name": "owner_email", "type": "column", "kind": "pii", "action": "mask", "count": 3},
    ]
    assert "@example" not in str(records)


def test_a_token_without_mask_columns_sees_the_values(
    connect: Connect, pg_mint: Callable[..., dict[str, Any]]  # noqa: F811
) -> None:
    conn = connect(pg_mint(MAINTAINER)["token"], autocommit=True)
    row = conn.execute("SELECT owner_email, embedding FROM candidates WHERE id = 2").fetchone()
    assert row is not None and not MARK.search(row[0]) and row[1] is not None
    with pytest.raises(psycopg.errors.InsufficientPrivilege):  # and the masked grant's rules are its own
        connect(pg_mint(MASKED)["token"], autocommit=True).execute("SELECT id FROM candidates ORDER BY owner_email")
