"""jitgate.pgsql: statements read with PostgreSQL's parser and checked against a token's scope."""

from __future__ import annotations

import pytest

from jitgate import errors
from jitgate.pgsql import analyze, normalize, statement_error
from jitgate.token import Scope

READER = Scope(operations=("select",), collections=("candidates",), fields=("id", "body", "embedding"))
MAINTAINER = Scope(operations=("select", "insert", "update", "delete"), collections=("candidates",))


def _decide(sql: str, scope: Scope = READER) -> errors.JitgateError | None:
    try:
        stmts = analyze(sql)
    except errors.JitgateError as err:
        return err
    return next((e for e in (statement_error(s, scope) for s in stmts) if e is not None), None)


@pytest.mark.parametrize(
    "sql",
    [
        "select id, body from candidates where id = 3",
        "select id, embedding <-> '[1,2,3,4,5,6,7,8]' as d from candidates order by d limit 5",
        "select id from candidates order by embedding <=> $1 limit 5",
        "select id from public.candidates",
        "select count(*) from candidates",
        "select typname from pg_catalog.pg_type where oid = 25",
        "select * from (select id from candidates) s",
        "select id from U&\"candid\\0061tes\"",
        "select /* a /* nested */ comment */ id from candidates",
        "select id from candidates where body = $x$ it's $x$",
        "begin", "commit", "rollback", "savepoint a", "release a", "rollback to a",
        "show server_version", "set statement_timeout = 5000", "set hnsw.ef_search = 100", "reset all",
        "discard all", "deallocate all", "select 1",
    ],
)
def test_reader_may(sql: str) -> None:
    assert _decide(sql) is None


@pytest.mark.parametrize(
    ("sql", "code"),
    [
        ("select * from candidates", "column_not_allowed"),
        ("select owner_email from candidates", "column_not_allowed"),
        ("select id from candidates where owner_email like '%a%'", "column_not_allowed"),
        ("select id from candidates order by owner_email", "column_not_allowed"),
        ("select (select owner_email from candidates limit 1)", "column_not_allowed"),
        ("select candidates from candidates", "column_not_allowed"),  # the whole row
        ("select c.id from candidates c where c.id in (select id from audit_notes)", "table_not_allowed"),
        ("with candidates as (select * from audit_notes) select id from candidates", "table_not_allowed"),
        ("select id from candidates union select id from audit_notes", "table_not_allowed"),
        ("select id from other.candidates", "table_not_allowed"),
        ("select id from \"Candidates\"", "table_not_allowed"),
        ("select * from pg_authid", "table_not_allowed"),
        ("select usename from pg_catalog.pg_shadow", "table_not_allowed"),
        ("select * from pg_user_mapping", "table_not_allowed"),
        ("select pg_read_file('/etc/passwd')", "function_not_allowed"),
        ("select pg_catalog.pg_sleep(1)", "function_not_allowed"),
        ("select lo_import('/etc/passwd')", "function_not_allowed"),
        ("select dblink('x', 'y')", "function_not_allowed"),
        ("select set_config('search_path', 'x', false)", "function_not_allowed"),
        ("select row_to_json(c) from candidates c", "function_not_allowed"),
        # A quoted name is that exact name (a function "LOWER" is none of the built-in lower's).
        ('select "LOWER"(body) from candidates', "function_not_allowed"),
        ('select "Count"(*) from candidates', "function_not_allowed"),
        ("select id from candidates order by id using ~<~", "function_not_allowed"),
        ("set search_path = evil", "setting_not_allowed"),
        ("set role postgres", "setting_not_allowed"),
        ("set session authorization postgres", "setting_not_allowed"),
        ("set client_encoding = 'SJIS'", "setting_not_allowed"),
        ("set standard_conforming_strings = off", "setting_not_allowed"),
        ("show all", "setting_not_allowed"),
        ("copy candidates to program 'id'", "statement_not_allowed"),
        ("copy candidates to '/tmp/x'", "statement_not_allowed"),
        ("do $$ begin perform 1; end $$", "statement_not_allowed"),
        ("prepare p as select 1", "statement_not_allowed"),
        ("execute p", "statement_not_allowed"),
        ("create function f() returns int as 'select 1' language sql", "statement_not_allowed"),
        ("alter system set log_statement = 'none'", "statement_not_allowed"),
        ("select id into t2 from candidates", "statement_not_allowed"),
        ("select id from candidates c(a, b)", "statement_not_allowed"),
        ("update candidates set body = 'x' where id = 1", "operation_not_allowed"),
        ("select id from candidates for update", "operation_not_allowed"),
        ("with d as (delete from candidates returning id) select id from d", "operation_not_allowed"),
        ("selec id from candidates", "sql_not_parsed"),
        ("prepare transaction 'x'", "statement_not_allowed"),
    ],
)
def test_reader_may_not(sql: str, code: str) -> None:
    err = _decide(sql)
    assert err is not None and err.code == code, (sql, err)


def test_star_refusal_names_the_allowed_columns() -> None:
    err = _decide("select * from candidates")
    assert err is not None and "body, embedding, id" in err.message


def test_several_statements_each_checked() -> None:
    stmts = analyze("select id from candidates; select owner_email from candidates")
    assert [s.kind for s in stmts] == ["select", "select"]
    assert statement_error(stmts[0], READER) is None
    assert statement_error(stmts[1], READER) is not None


@pytest.mark.parametrize(
    "sql",
    [
        "select * from candidates",
        "insert into candidates (id, body, owner_email) values (99, 'b', 'x@example.com') returning id",
        "update candidates set body = 'x' where id = 1 returning old.body",
        "delete from candidates where id = 99",
    ],
)
def test_maintainer_may(sql: str) -> None:
    assert _decide(sql, MAINTAINER) is None


def test_maintainer_still_refused_outside_its_tables() -> None:
    err = _decide("delete from audit_notes", MAINTAINER)
    assert err is not None and err.code == "table_not_allowed"


def test_normalized_text_has_no_literal() -> None:
    (stmt,) = analyze("select id from candidates where body = 'alice@example.com' and id > 41 -- note")
    assert "alice" not in stmt.normalized and "41" not in stmt.normalized and "note" not in stmt.normalized
    assert stmt.normalized == "select id from candidates where body = ? and id > ?"
    assert stmt.fingerprint and stmt.tables == ("public.candidates",)
    assert stmt.columns == ("public.candidates.body", "public.candidates.id")
    assert normalize("select $q$x$q$") == "select ?"


def test_oversized_statement_refused() -> None:
    with pytest.raises(errors.StatementNotAllowed):
        analyze("select 1 " + " " * (1024 * 1024))


MASKED = Scope(
    operations=("select", "insert", "update"), collections=("candidates",),
    mask_columns=("owner_email", "public.candidates.embedding"),
)


@pytest.mark.parametrize(
    "sql",
    [
        "select id, owner_email from candidates",
        "select owner_email as e, embedding from candidates where id = 3",
        "select * from candidates",
        "select c.owner_email, c.* from candidates c",
        "select public.candidates.owner_email from public.candidates",
        "select id from candidates where body like 'x%' order by id",
        "insert into candidates (id, owner_email) values (99, 'x@example.com')",  # written, never read back
        "update candidates set owner_email = 'x@example.com' where id = 99",
    ],
)
def test_masked_columns_may_be_selected_as_they_are(sql: str) -> None:
    assert _decide(sql, MASKED) is None, sql


@pytest.mark.parametrize(
    "sql",
    [
        "select id from candidates where owner_email like 'a%'",  # an oracle on the value
        "select id from candidates order by owner_email",
        "select lower(owner_email) from candidates",
        "select owner_email || '' from candidates",
        "select owner_email::varchar from candidates",
        "select length(owner_email) from candidates",
        "select count(distinct owner_email) from candidates",
        "select id from candidates group by owner_email, id",
        "select x from (select owner_email as x from candidates) s",  # through a derived table
        "with t as (select owner_email from candidates) select owner_email from t",
        "select id from candidates where id in (select id from candidates where owner_email = 'x')",
        "select owner_email from candidates union select body from candidates",
        "select c from candidates c",  # a whole row as one value
        "select embedding <-> '[1,2,3,4,5,6,7,8]' from candidates",
        "select id from candidates order by embedding <=> '[1,2,3,4,5,6,7,8]' limit 3",
        "select a.id from candidates a join candidates b on a.owner_email = b.owner_email",
        "update candidates set body = owner_email where id = 1",
        "update candidates set body = 'x' where id = 1 returning owner_email",
        "select id from candidates c where c.owner_email is not null",
    ],
)
def test_masked_columns_refused_where_their_value_could_be_read_otherwise(sql: str) -> None:
    err = _decide(sql, MASKED)
    assert err is not None and err.code == "column_masked", (sql, err)


@pytest.mark.parametrize(
    "sql",
    [
        "set jitgate.sub = 'someone-else'",
        "set session jitgate.sub to 'x'",
        "set local jitgate.groups = 'admins'",
        'set "JITGATE.SUB" = x',
        "reset jitgate.sub",
        "set jitgate.anything = 'x'",
        "select set_config('jitgate.sub', 'x', false)",
        "select current_setting('jitgate.sub')",
        "set session authorization default",
        "reset session authorization",
        "reset role",
        "alter role current_user set jitgate.sub = 'x'",
        "alter database ranking set jitgate.sub = 'x'",
    ],
)
def test_identity_settings_cannot_be_changed(sql: str) -> None:
    err = _decide(sql, MAINTAINER)
    assert err is not None and err.code in ("setting_not_allowed", "function_not_allowed", "statement_not_allowed")


@pytest.mark.parametrize(
    "sql", ["show jitgate.sub", "show jitgate.groups", "reset all", "discard all", "set application_name = 'x'"]
)
def test_identity_settings_readable_and_reset_all_allowed(sql: str) -> None:
    # RESET ALL and DISCARD ALL bring the startup values back (a test on the server shows it).
    assert _decide(sql, MAINTAINER) is None
