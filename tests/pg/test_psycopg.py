"""psycopg 3, unchanged, through the real gateway: simple and extended protocol, binary results,
server-side binding, prepared statements, pgvector, transactions with a refused statement inside,
and a token revoked while its connection is open."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import APPROVER_GROUP
from jitgate.devstack.postgres import Postgres
from jitgate.devstack.process import ChildServer
from tests.e2e.background import Background
from tests.pg.conftest import MAINTAINER, READER, approvals_cli

Connect = Callable[..., psycopg.Connection[Any]]


@pytest.fixture
def connect(pg_env: Callable[..., dict[str, str]]) -> Iterator[Connect]:
    opened: list[psycopg.Connection[Any]] = []

    def _connect(token: str, **kwargs: Any) -> psycopg.Connection[Any]:
        env = pg_env(token)
        conn = psycopg.connect(
            host=env["PGHOST"], port=env["PGPORT"], dbname="ranking", user="reranker", password=token,
            sslmode="verify-full", sslrootcert=env["PGSSLROOTCERT"], connect_timeout=10, **kwargs,
        )
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        conn.close()


def test_simple_and_extended(connect: Connect, pg_mint: Callable[..., dict[str, Any]]) -> None:
    conn = connect(pg_mint(READER)["token"], autocommit=True)
    # No parameters: psycopg sends a simple Query; with parameters, Parse/Bind/Execute (server-side binding).
    assert conn.execute("SELECT count(*) FROM candidates").fetchone() == (24,)
    # The e-mail in the body is masked (a text column, profile `default`), the rest unchanged.
    row = conn.execute("SELECT id, body FROM candidates WHERE id = %s", (3,)).fetchone()
    assert row is not None and row[0] == 3
    assert re.fullmatch(r"candidate 3: reranking notes, contact \[REDACTED:email:[0-9a-f]+\]", row[1]), row
    rows = conn.execute("SELECT id FROM candidates WHERE id = ANY(%s) ORDER BY id", ([1, 2, 5],)).fetchall()
    assert rows == [(1,), (2,), (5,)]


def test_binary_results_and_prepared(connect: Connect, pg_mint: Callable[..., dict[str, Any]]) -> None:
    conn = connect(pg_mint(READER)["token"], autocommit=True)
    with conn.cursor(binary=True) as cur:
        cur.execute("SELECT id, body FROM candidates WHERE id = %s", (7,))
        row = cur.fetchone()  # binary result format: the text value masked too, its length rewritten
        assert row is not None and row[0] == 7
        assert re.fullmatch(r"candidate 7: reranking notes, contact \[REDACTED:email:[0-9a-f]+\]", row[1]), row
        cur.execute("SELECT id, body FROM candidates ORDER BY id")
        rows = cur.fetchall()
        assert [r[0] for r in rows] == list(range(1, 25))  # rows and order unchanged
        assert not any("@example." in r[1] for r in rows)
    for i in (1, 2, 3, 4):  # prepare=True: a named statement, Parse once, Bind/Execute each time
        assert conn.execute("SELECT id FROM candidates WHERE id = %s", (i,), prepare=True).fetchone() == (i,)


def test_pgvector_nearest_neighbours(connect: Connect, pg_mint: Callable[..., dict[str, Any]]) -> None:
    conn = connect(pg_mint(READER)["token"], autocommit=True)
    rows = conn.execute(
        "SELECT id, embedding <=> %s::vector AS d FROM candidates ORDER BY d LIMIT 5", ("[1,1,1,1,1,1,1,1]",)
    ).fetchall()
    assert len(rows) == 5 and all(isinstance(d, float) for _, d in rows)
    assert [d for _, d in rows] == sorted(d for _, d in rows)


def test_refused_statement_inside_a_transaction(connect: Connect, pg_mint: Callable[..., dict[str, Any]]) -> None:
    conn = connect(pg_mint(READER)["token"])  # psycopg opens a transaction itself
    assert conn.execute("SELECT id FROM candidates WHERE id = %s", (1,)).fetchone() == (1,)
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
        conn.execute("SELECT owner_email FROM candidates WHERE id = %s", (1,))
    assert "jitgate column_not_allowed" in str(refused.value)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
    with pytest.raises(psycopg.errors.InFailedSqlTransaction):
        conn.execute("SELECT id FROM candidates WHERE id = 2")
    conn.rollback()
    assert conn.execute("SELECT id FROM candidates WHERE id = %s", (2,)).fetchone() == (2,)
    conn.commit()


def test_refusal_keeps_the_connection(connect: Connect, pg_mint: Callable[..., dict[str, Any]]) -> None:
    conn = connect(pg_mint(READER)["token"], autocommit=True)
    for sql in ("SELECT * FROM candidates", "SELECT note FROM audit_notes", "SELECT pg_sleep(0)"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql + " WHERE %s", (True,))
    assert conn.execute("SELECT count(*) FROM candidates").fetchone() == (24,)


def test_maintainer_writes(
    connect: Connect, pg_mint: Callable[..., dict[str, Any]], postgres: Postgres,
    pg_hold: Callable[[str, str], dict[str, Any]], pg_broker: ChildServer, oidc_issuer: OidcIssuer,
) -> None:
    minted = pg_mint(MAINTAINER)
    conn = connect(minted["token"], autocommit=True)
    got = conn.execute(
        "INSERT INTO candidates (id, body, owner_email, embedding) VALUES (%s, %s, %s, %s) RETURNING id",
        (1001, "new candidate", "new@example.com", "[0,0,0,0,0,0,0,1]"),
    ).fetchone()
    assert got == (1001,)
    assert conn.execute("UPDATE candidates SET body = %s WHERE id = %s", ("edited", 1001)).rowcount == 1
    (email,) = conn.execute("SELECT owner_email FROM candidates WHERE id = 1001").fetchone() or ("",)
    assert re.fullmatch(r"\[REDACTED:email:[0-9a-f]+\]", email), email  # varchar: masked like text
    # pg-dev's deletes wait for a search lead (tests/pg/test_holds.py): approved, it runs.
    delete = Background(lambda: conn.execute("DELETE FROM candidates WHERE id = %s", (1001,)))
    lead = oidc_issuer.mint("lead-a", {"groups": [APPROVER_GROUP]})
    hold = pg_hold(lead, minted["jti"])
    assert approvals_cli(pg_broker.url, lead, "approve", hold["id"], "--reason", "test row").exit_code == 0
    assert delete.result().rowcount == 1
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM audit_notes")
    assert postgres.psql("SELECT count(*) FROM audit_notes").strip() == "2"


def test_revoked_token_on_an_open_connection(
    connect: Connect, pg_mint: Callable[..., dict[str, Any]], pg_revoke: Callable[[dict[str, Any]], None]
) -> None:
    minted = pg_mint(READER)
    conn = connect(minted["token"], autocommit=True)
    assert conn.execute("SELECT count(*) FROM candidates").fetchone() == (24,)
    pg_revoke(minted)
    err: psycopg.Error | None = None
    for _ in range(200):  # until this gateway's revocation list has the jti (refresh every 0.5 s)
        try:
            conn.execute("SELECT count(*) FROM candidates")
        except psycopg.Error as exc:
            err = exc
            break
        time.sleep(0.1)
    assert err is not None and "jitgate token_revoked" in str(err)
    assert err.sqlstate == "28000"
    assert conn.closed or conn.broken or conn.info.status == psycopg.pq.ConnStatus.BAD


def test_driver_type_introspection(connect: Connect, pg_mint: Callable[..., dict[str, Any]]) -> None:
    conn = connect(pg_mint(READER)["token"], autocommit=True)
    info = psycopg.types.TypeInfo.fetch(conn, "vector")
    assert info is not None and info.name == "vector"


def test_commit_after_a_refusal_rolls_back(
    connect: Connect, pg_mint: Callable[..., dict[str, Any]], postgres: Postgres
) -> None:
    conn = connect(pg_mint(MAINTAINER)["token"])
    conn.execute("INSERT INTO candidates (id, body) VALUES (%s, %s)", (2001, "kept only if committed"))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT note FROM audit_notes")
    for commit in ("COMMIT", "COMMIT -- as a prepared statement"):
        cur = conn.execute(commit, prepare=commit != "COMMIT")  # extended protocol both ways
        assert cur.statusmessage == "ROLLBACK"  # what the server answers to COMMIT of a failed transaction
        conn.execute("INSERT INTO candidates (id, body) VALUES (%s, %s)", (2002, "x"))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT note FROM audit_notes")
    conn.rollback()
    assert postgres.psql("SELECT count(*) FROM candidates WHERE id IN (2001, 2002)").strip() == "0"


@pytest.mark.parametrize("binary", [False, True])
def test_a_long_result_keeps_every_row_in_order(
    connect: Connect, pg_mint: Callable[..., dict[str, Any]], binary: bool
) -> None:
    """Rows are written to the client in bursts (up to 64 KiB at once): none lost, none reordered."""
    conn = connect(pg_mint(READER)["token"], autocommit=True)
    sql = ("SELECT g, 'row ' || g || ' ' || repeat('x', 150) || ' mail' || g || '@example.com'"
           " FROM generate_series(1, 1000) g")
    rows = conn.cursor(binary=binary).execute(sql).fetchall()  # the reader's max_documents: 1000 rows
    assert [r[0] for r in rows] == list(range(1, 1001))
    assert all(r[1].startswith(f"row {r[0]} {'x' * 150} [REDACTED:email:") for r in rows)
    assert sum(len(r[1]) for r in rows) > 2 * 64 * 1024  # several bursts
