"""jitgate.pghold's rules (which statements wait for a human, what the approver sees) and
jitgate.pgcache (a repeated statement reuses its decision, never across scopes)."""

from __future__ import annotations

import pytest

from jitgate.errors import JitgateError
from jitgate.pgcache import DecisionCache, judge
from jitgate.pghold import hold_reasons, statement_hold
from jitgate.pgsql import analyze
from jitgate.policy import ApprovalRules, Principal, parse_policy
from jitgate.token import Claims, Limits, Scope

READER = Scope(operations=("select",), collections=("candidates",), fields=("id", "body", "embedding"))
MAINTAINER = Scope(operations=("select", "insert", "update", "delete"), collections=("candidates",))
DELETES = ApprovalRules(operations=("delete",))


@pytest.mark.parametrize(
    ("sql", "rules", "reasons"),
    [
        ("delete from candidates where id = 3", DELETES, ("operation:delete",)),
        ("delete from candidates", DELETES, ("no_where:delete", "operation:delete")),
        ("delete from candidates", ApprovalRules(), ("no_where:delete",)),  # always, whatever the rules
        ("update candidates set body = 'x'", ApprovalRules(), ("no_where:update",)),
        ("update candidates set body = 'x' where id = 1", DELETES, ()),
        ("with d as (delete from candidates returning id) select id from d", DELETES,
         ("no_where:delete", "operation:delete")),  # a data-modifying CTE is no hiding place
        ("with d as (delete from candidates where id = 1 returning id) select id from d", DELETES,
         ("operation:delete",)),
        ("select id from candidates", DELETES, ()),
        ("insert into candidates (id) values (1)", DELETES, ()),
        ("update candidates set body = 'x' from audit_notes", ApprovalRules(), ("no_where:update",)),
        ("delete from candidates using audit_notes where candidates.id = audit_notes.id", DELETES,
         ("operation:delete",)),
    ],
)
def test_hold_reasons(sql: str, rules: ApprovalRules, reasons: tuple[str, ...]) -> None:
    assert hold_reasons(rules, analyze(sql)) == reasons


def test_several_statements_are_one_hold_with_every_reason() -> None:
    stmts = analyze("select 1; delete from candidates where id = 1; update candidates set body = 'x'")
    assert hold_reasons(DELETES, stmts) == ("operation:delete", "no_where:update")


def test_the_approver_sees_the_statement_without_its_literals() -> None:
    policy = parse_policy(_POLICY)
    conn = policy.connections["pg-dev"]
    claims = Claims(
        iss="https://broker.test", sub="svc:janitor", aud="jitgate", exp=2_000_000_000, iat=1, nbf=1, jti="j" * 32,
        conn="pg-dev", scope=MAINTAINER, limits=Limits(), mask="default", job="cleanup",
    )
    stmts = analyze("delete from candidates where owner_email = 'alice@example.com'")
    approval = statement_hold(
        policy, conn, claims, stmts, hold_reasons(conn.approval, stmts), user="janitor", now=100.0, timeout=30.0,
        gateway="gw", flow_id="pg-1-1",
    )
    assert approval.requester == "svc:janitor" and approval.kind == "hold" and approval.expires_at == 130.0
    assert approval.approvers.members == (Principal(issuer="https://id.test", group="search-leads"),)
    summary = approval.summary
    assert summary["statement"] == "delete from candidates where owner_email = ?"
    assert summary["tables"] == ["public.candidates"] and summary["reasons"] == ["operation:delete"]
    assert summary["db_user"] == "janitor" and summary["method"] == "SQL" and summary["path"] == "/ranking"
    assert summary["jti"] == "j" * 32 and summary["statement_fingerprints"] == [stmts[0].fingerprint]
    assert "alice" not in repr(summary)


_POLICY = """
version: 1
issuers: [{issuer: "https://id.test", audience: jitgate}]
admins: [{issuer: "https://id.test", group: platform-security}]
connections:
  pg-dev:
    dialect: postgres
    upstream: postgres://127.0.0.1:5432/ranking
    credential: {secret_id: jitgate/test/pg-dev}
    approval:
      operations: [delete]
      approvers: {count: 1, members: [{issuer: "https://id.test", group: search-leads}]}
grants: []
"""


def _same(a: tuple[object, JitgateError | None], b: tuple[object, JitgateError | None]) -> None:
    assert a[0] == b[0]
    assert (a[1] is None) == (b[1] is None)
    if a[1] is not None and b[1] is not None:
        assert (a[1].code, a[1].message) == (b[1].code, b[1].message)


@pytest.mark.parametrize(
    "sql",
    [
        "select id, body from candidates where id = $1",
        "select owner_email from candidates where id = $1",  # refused for the reader
        "select pg_sleep(1)",
        "select from where",
    ],
)
def test_a_cache_hit_makes_the_same_decision(sql: str) -> None:
    cache = DecisionCache()
    first = cache.decide(sql, READER, "public")
    again = cache.decide(sql, READER, "public")
    assert (cache.misses, cache.hits) == (1, 1)
    assert again is first  # the kept decision itself
    _same(again, judge(sql, READER, "public"))  # and what an uncached check decides


def test_another_scope_never_reuses_a_decision() -> None:
    cache = DecisionCache()
    sql = "select owner_email from candidates where id = $1"
    allowed = cache.decide(sql, MAINTAINER, "public")
    assert allowed[1] is None
    refused = cache.decide(sql, READER, "public")  # same text, a grant without the column
    assert refused[1] is not None and refused[1].code == "column_not_allowed"
    narrower = Scope(operations=("select",), collections=("audit_notes",))
    assert cache.decide(sql, narrower, "public")[1] is not None
    other = cache.decide(sql, MAINTAINER, "other")  # another schema: the same name is another table
    assert other[0][0].tables == ("other.candidates",) and allowed[0][0].tables == ("public.candidates",)
    assert (cache.misses, cache.hits) == (4, 0)
    assert cache.decide(sql, MAINTAINER, "public") is allowed and cache.hits == 1


def test_the_cache_is_bounded() -> None:
    cache = DecisionCache(size=3, max_text=64)
    for i in range(5):
        cache.decide(f"select id from candidates where id = {i}", READER, "public")
    assert len(cache) == 3
    cache.decide("select id from candidates where id = 4", READER, "public")
    assert cache.hits == 1  # the most recent kept
    cache.decide("select id from candidates where id = 0", READER, "public")
    assert cache.hits == 1  # the oldest went first
    long_text = "select id from candidates where body = '" + "x" * 100 + "'"
    cache.decide(long_text, READER, "public")
    cache.decide(long_text, READER, "public")
    assert cache.hits == 1 and long_text not in {k[0] for k in cache._entries}  # too long to keep
