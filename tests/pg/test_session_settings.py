"""The jitgate.* settings on the real server: an RLS policy reads them, the client cannot change them."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from jitgate import pgsession
from jitgate.devstack.postgres import APP_ROLE, Postgres
from tests.pg.conftest import MAINTAINER, READER
from tests.pg.test_psql import _psql

# The policy docs/gateway.md shows: rows by owner, and every row for the group ranking-admins.
RLS = f"""
CREATE TABLE candidate_owners (candidate_id bigint NOT NULL, sub text NOT NULL);
GRANT SELECT ON candidate_owners TO {APP_ROLE};
INSERT INTO candidate_owners SELECT g, '{READER}' FROM generate_series(1, 5) g;
INSERT INTO candidate_owners SELECT g, '{MAINTAINER}' FROM generate_series(6, 8) g;
ALTER TABLE candidates ENABLE ROW LEVEL SECURITY;
CREATE POLICY candidates_by_sub ON candidates FOR SELECT USING (
    id IN (SELECT candidate_id FROM candidate_owners WHERE sub = current_setting('jitgate.sub'))
    OR 'ranking-admins' = ANY (string_to_array(current_setting('jitgate.groups'), ','))
);
"""
UNDO = """
DROP POLICY IF EXISTS candidates_by_sub ON candidates;
ALTER TABLE candidates DISABLE ROW LEVEL SECURITY;
DROP TABLE IF EXISTS candidate_owners;
"""


@pytest.fixture
def row_security(postgres: Postgres) -> Iterator[None]:
    postgres.psql(RLS)
    try:
        yield
    finally:
        postgres.psql(UNDO)


def _ids(env: dict[str, str]) -> list[str]:
    out = _psql(env, sql="SELECT id FROM candidates ORDER BY id")
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_an_rls_policy_gives_each_identity_its_rows(
    row_security: None, pg_mint: Callable[..., dict[str, Any]], pg_env: Callable[..., dict[str, str]]
) -> None:
    assert _ids(pg_env(pg_mint(READER)["token"])) == ["1", "2", "3", "4", "5"]
    assert _ids(pg_env(pg_mint(MAINTAINER)["token"])) == ["6", "7", "8"]
    admin = pg_mint(MAINTAINER, oidc_claims={"groups": ["ranking-admins", "oncall"]})
    assert _ids(pg_env(admin["token"])) == [str(i) for i in range(1, 25)]


def test_the_settings_hold_the_token_and_survive_every_reset(
    row_security: None, pg_mint: Callable[..., dict[str, Any]], pg_env: Callable[..., dict[str, str]]
) -> None:
    minted = pg_mint(READER, job="rerank-nightly", oidc_claims={"groups": ["rankers", "a,b"]})
    env = pg_env(minted["token"])
    shown = _psql(
        env, "-c", "SHOW jitgate.sub", "-c", "SHOW jitgate.job", "-c", "SHOW jitgate.connection",
        "-c", "SHOW jitgate.groups",
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [READER, "rerank-nightly", "pg-dev", "rankers"]  # "a,b": left out
    for attempt, code in (
        (f"SET jitgate.sub = '{MAINTAINER}'", "setting_not_allowed"),
        (f"SET SESSION \"JITGATE.SUB\" TO '{MAINTAINER}'", "setting_not_allowed"),
        ("SET LOCAL jitgate.groups = 'ranking-admins'", "setting_not_allowed"),
        ("RESET jitgate.sub", "setting_not_allowed"),
        (f"SELECT set_config('jitgate.sub', '{MAINTAINER}', false)", "function_not_allowed"),
        ("SET SESSION AUTHORIZATION DEFAULT", "setting_not_allowed"),
        ("SET ROLE NONE", "setting_not_allowed"),
        ("ALTER ROLE CURRENT_USER SET jitgate.sub = 'x'", "statement_not_allowed"),
    ):
        out = _psql(env, sql=attempt)
        assert f"jitgate {code}" in out.stderr, (attempt, out.stderr)
    # row_security is a setting a client may change, but off makes a filtered query fail, never see more.
    out = _psql(env, "-c", "SET row_security = off", sql="SELECT id FROM candidates ORDER BY id")
    assert out.returncode != 0 and "row-level security" in out.stderr, out
    # RESET ALL and DISCARD ALL go back to the session's startup values: the gateway's.
    out = _psql(env, "-c", "RESET ALL", "-c", "DISCARD ALL", "-c", "SHOW jitgate.sub",
                "-c", "SELECT id FROM candidates ORDER BY id")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["RESET", "DISCARD ALL", READER, "1", "2", "3", "4", "5"], out.stdout


def test_startup_options_reach_the_server_as_written(postgres: Postgres) -> None:
    """The escaping on the real server: spaces, tabs, backslashes and a `-c` inside a value stay in it."""
    values = {"jitgate.sub": "a b\\c\t-c role=postgres", "jitgate.job": "", "jitgate.groups": "x,y z"}
    env = {
        "PATH": os.environ.get("PATH", ""), "PGPASSWORD": postgres.superuser_password, "PGSSLMODE": "prefer",
        "PGOPTIONS": pgsession.startup_options(values),
    }
    argv = ["psql", "-X", "-At", "-h", "127.0.0.1", "-p", str(postgres.port), "-U", "postgres", "-d", "ranking"]
    for name in values:
        argv += ["-c", f"SELECT current_setting('{name}') = {_literal(values[name])}"]
    argv += ["-c", "SELECT current_user"]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["t", "t", "t", "postgres"]


def _literal(value: str) -> str:
    return "E'" + value.replace("\\", "\\\\").replace("'", "''").replace("\t", "\\t") + "'"
