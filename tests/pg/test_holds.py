"""Held statements through the real gateway, server and broker: psql (simple protocol) and psycopg
(extended protocol) wait while `jitgate approvals list` shows the statement; approved by another
identity it runs, denied or timed out it is an ErrorResponse, and the requester never decides.

The dev policy holds the maintainer grant's deletes on pg-dev for a search lead, and every UPDATE
or DELETE without WHERE whatever the rules say."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from jitgate.devstack.aws import Stack
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import ADMIN_GROUP, APPROVER_GROUP
from jitgate.devstack.postgres import Postgres
from jitgate.devstack.process import ChildServer
from tests.e2e.background import Background
from tests.pg.conftest import MAINTAINER, approvals_cli
from tests.pg.test_records_limits import _psql, _records

Hold = Callable[[str, str], dict[str, Any]]


@pytest.fixture
def row(postgres: Postgres) -> Iterator[int]:
    """A candidate of this test's own (set up directly on the server), gone again after it."""
    ident = 7000 + int(postgres.psql("SELECT count(*) FROM candidates").strip())
    postgres.psql(f"INSERT INTO candidates VALUES ({ident}, 'to be removed', 'x@example.com', '[1,1,1,1,1,1,1,1]')")
    yield ident
    postgres.psql(f"DELETE FROM candidates WHERE id = {ident}")


def _count(postgres: Postgres, where: str = "true") -> int:
    return int(postgres.psql(f"SELECT count(*) FROM candidates WHERE {where}").strip())


def _lead(issuer: OidcIssuer, name: str = "lead-a") -> str:
    return issuer.mint(name, {"groups": [APPROVER_GROUP]})


def _psycopg(env: dict[str, str]) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=env["PGHOST"], port=env["PGPORT"], dbname="ranking", user="janitor", password=env["PGPASSWORD"],
        sslmode="verify-full", sslrootcert=env["PGSSLROOTCERT"], connect_timeout=10, autocommit=True,
    )


def test_held_delete_approved_by_a_lead_runs(
    pg_mint: Callable[..., dict[str, Any]], pg_env: Callable[..., dict[str, str]], pg_hold: Hold,
    pg_broker: ChildServer, oidc_issuer: OidcIssuer, postgres: Postgres, pg_stack: Stack, row: int,
) -> None:
    minted = pg_mint(MAINTAINER, job="cleanup-12")
    call = Background(lambda: _psql(pg_env(minted["token"], PGUSER="janitor"),
                                    f"DELETE FROM candidates WHERE id = {row}"))
    lead = _lead(oidc_issuer)
    hold = pg_hold(lead, minted["jti"])
    summary = hold["summary"]
    assert hold["requester"] == MAINTAINER and hold["connection"] == "pg-dev"
    assert summary["statement"] == "DELETE FROM candidates WHERE id = ?"
    assert summary["tables"] == ["public.candidates"] and summary["reasons"] == ["operation:delete"]
    assert summary["db_user"] == "janitor" and summary["job"] == "cleanup-12" and summary["method"] == "SQL"
    text = json.dumps(hold)
    assert str(row) not in text and minted["token"] not in text  # no literal, no token
    listed = approvals_cli(pg_broker.url, lead, "list")
    assert f"{hold['id']}  hold  pg-dev  by {MAINTAINER}" in listed.stdout
    assert "statement: DELETE FROM candidates WHERE id = ?" in listed.stdout
    assert call.running() and _count(postgres, f"id = {row}") == 1  # waiting: nothing reached the server

    assert approvals_cli(pg_broker.url, lead, "approve", hold["id"], "--reason", "ticket 12").exit_code == 0
    out = call.result()
    assert out.returncode == 0, out.stderr
    assert _count(postgres, f"id = {row}") == 0  # the row is really gone
    (record,) = _records(pg_stack, minted["jti"], 1)
    assert record["decision"] == "approved" and record["approval_id"] == hold["id"] and record["error"] is None
    assert record["statement"] == summary["statement"]


@pytest.mark.parametrize(
    ("sql", "reasons"),
    [
        ("DELETE FROM candidates", ["no_where:delete", "operation:delete"]),
        ("UPDATE candidates SET body = 'gone'", ["no_where:update"]),  # update is no rule: held for no WHERE
    ],
)
def test_held_statement_denied(
    pg_mint: Callable[..., dict[str, Any]], pg_env: Callable[..., dict[str, str]], pg_hold: Hold,
    pg_broker: ChildServer, oidc_issuer: OidcIssuer, postgres: Postgres, pg_stack: Stack, sql: str,
    reasons: list[str],
) -> None:
    before = _count(postgres, "body <> 'gone'")
    minted = pg_mint(MAINTAINER)
    call = Background(lambda: _psql(pg_env(minted["token"]), sql, "SELECT count(*) FROM candidates"))
    lead = _lead(oidc_issuer, "lead-b")
    hold = pg_hold(lead, minted["jti"])
    assert hold["summary"]["reasons"] == reasons and "'gone'" not in json.dumps(hold)
    assert approvals_cli(pg_broker.url, lead, "deny", hold["id"], "--reason", "every row? no").exit_code == 0
    out = call.result()
    assert "jitgate approval_denied" in out.stderr, out.stderr
    assert out.stdout.split() == [str(before)]  # the connection went on; nothing changed
    assert _count(postgres, "body <> 'gone'") == before
    records = _records(pg_stack, minted["jti"], 2)
    denied = next(r for r in records if r["operation"] != "select")
    assert denied["decision"] == "denied" and denied["error"] == "approval_denied"
    assert denied["approval_id"] == hold["id"]


def test_held_statement_times_out_on_the_extended_protocol(
    pg_mint: Callable[..., dict[str, Any]], pg_env: Callable[..., dict[str, str]], pg_hold: Hold,
    pg_broker: ChildServer, oidc_issuer: OidcIssuer, postgres: Postgres, pg_stack: Stack, row: int,
) -> None:
    minted = pg_mint(MAINTAINER)
    conn = _psycopg(pg_env(minted["token"]))
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="jitgate approval_timeout"):
            conn.execute("DELETE FROM candidates WHERE id = %s", (row,))  # Parse/Bind/Execute: server-side binding
        assert conn.execute("SELECT count(*) FROM candidates WHERE id = %s", (row,)).fetchone() == (1,)
    finally:
        conn.close()
    (record,) = [r for r in _records(pg_stack, minted["jti"], 2) if r["operation"] == "delete"]
    assert record["decision"] == "denied" and record["error"] == "approval_timeout" and record["approval_id"]
    late = approvals_cli(pg_broker.url, _lead(oidc_issuer), "approve", record["approval_id"], "--reason", "late")
    assert late.exit_code == 2 and "approval_expired" in late.output
    assert _count(postgres, f"id = {row}") == 1


def test_the_requester_cannot_approve_its_own_hold(
    pg_mint: Callable[..., dict[str, Any]], pg_env: Callable[..., dict[str, str]], pg_hold: Hold,
    pg_broker: ChildServer, oidc_issuer: OidcIssuer, postgres: Postgres, row: int,
) -> None:
    minted = pg_mint(MAINTAINER)
    conn = _psycopg(pg_env(minted["token"]))
    call = Background(lambda: conn.execute("DELETE FROM candidates WHERE id = %s", (row,)))
    try:
        hold = pg_hold(_lead(oidc_issuer), minted["jti"])
        own = oidc_issuer.mint(MAINTAINER, {"groups": [APPROVER_GROUP]})  # even as a member of the approvers
        refused = approvals_cli(pg_broker.url, own, "approve", hold["id"], "--reason", "mine")
        assert refused.exit_code == 2 and "self_approval" in refused.output
        admin = oidc_issuer.mint("sec-oncall", {"groups": [ADMIN_GROUP]})  # the connection names its approvers
        refused = approvals_cli(pg_broker.url, admin, "approve", hold["id"], "--reason", "admin")
        assert refused.exit_code == 2 and "not_an_approver" in refused.output
        assert call.running() and _count(postgres, f"id = {row}") == 1
        assert approvals_cli(pg_broker.url, _lead(oidc_issuer), "deny", hold["id"], "--reason", "no").exit_code == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="jitgate approval_denied"):
            call.result()
    finally:
        conn.close()
    assert _count(postgres, f"id = {row}") == 1


def test_a_token_revoked_while_its_statement_waits_ends_the_hold(
    pg_mint: Callable[..., dict[str, Any]], pg_env: Callable[..., dict[str, str]], pg_hold: Hold,
    pg_revoke: Callable[[dict[str, Any]], None], pg_broker: ChildServer, oidc_issuer: OidcIssuer,
    postgres: Postgres, row: int,
) -> None:
    minted = pg_mint(MAINTAINER)
    call = Background(lambda: _psql(pg_env(minted["token"]), f"DELETE FROM candidates WHERE id = {row}"))
    hold = pg_hold(_lead(oidc_issuer), minted["jti"])
    pg_revoke(minted)
    out: subprocess.CompletedProcess[str] = call.result()
    assert "jitgate token_revoked" in out.stderr, out.stderr
    late = approvals_cli(pg_broker.url, _lead(oidc_issuer), "approve", hold["id"], "--reason", "too late")
    assert late.exit_code == 2 and "approval_expired" in late.output  # the gateway closed the hold
    assert _count(postgres, f"id = {row}") == 1
