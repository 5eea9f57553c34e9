"""psql, unchanged, through the real gateway to the real Postgres."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from jitgate.devstack.aws import Stack
from jitgate.devstack.postgres import Postgres
from tests.pg.conftest import READER

PSQL = "psql"


def _psql(env: dict[str, str], *args: str, sql: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [PSQL, "-X", "-At", "-v", "ON_ERROR_STOP=1", *args]
    if sql is not None:
        argv += ["-c", sql]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def test_nearest_neighbours(pg_mint: Callable[..., dict[str, Any]], pg_env: Callable[..., dict[str, str]]) -> None:
    token = pg_mint(READER)["token"]
    out = _psql(pg_env(token), sql="SELECT id FROM candidates ORDER BY embedding <-> '[0,0,0,0,0,0,0,0]' LIMIT 3")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["16", "5", "7"]


def test_describe_commands(pg_mint: Callable[..., dict[str, Any]], pg_env: Callable[..., dict[str, str]]) -> None:
    env = pg_env(pg_mint(READER)["token"])
    for meta, shown in ((r"\dt", "candidates"), (r"\d candidates", "embedding|vector(8)")):
        out = _psql(env, "-c", meta)
        assert out.returncode == 0, (meta, out.stderr)
        assert shown in out.stdout


def test_upstream_tls_verified(
    pg_mint: Callable[..., dict[str, Any]], pg_env: Callable[..., dict[str, str]], postgres_tls: Postgres | None
) -> None:
    if postgres_tls is None:
        pytest.skip("Debian's postgresql-15 (a server built with TLS) is not installed")
    # The server takes TLS connections only: an answer means the gateway spoke TLS to it.
    token = pg_mint(READER, connection="pg-tls")["token"]
    out = _psql(pg_env(token), sql="SELECT count(*) FROM candidates")
    assert out.returncode == 0 and out.stdout.strip() == "24", out.stderr
    # Under a name its certificate does not hold, the gateway refuses to log in at all.
    token = pg_mint(READER, connection="pg-tls-badname")["token"]
    out = _psql(pg_env(token), sql="SELECT count(*) FROM candidates")
    assert out.returncode != 0 and "jitgate upstream_unavailable" in out.stderr, out.stderr


def test_rotated_credential_is_read_again(
    pg_mint: Callable[..., dict[str, Any]], pg_env: Callable[..., dict[str, str]], postgres: Postgres,
    pg_stack: Stack,
) -> None:
    env = pg_env(pg_mint(READER)["token"])
    assert _psql(env, sql="SELECT 1").returncode == 0  # the gateway now holds the secret in memory
    rotated = secrets.token_urlsafe(18)
    # Rotation as an operator does it: the role's password, then the secret (the statement stays out of the log).
    postgres.psql(f"SET log_statement = 'none'; ALTER ROLE ranker PASSWORD '{rotated}';")
    sm = boto3.client("secretsmanager", endpoint_url=pg_stack.endpoint_url, region_name=pg_stack.region)
    secret = json.dumps({"username": "ranker", "password": rotated})
    sm.put_secret_value(SecretId="jitgate/test/pg-dev", SecretString=secret)
    postgres.password = rotated
    out = _psql(env, sql="SELECT count(*) FROM candidates")  # rejected once upstream, read afresh, retried
    assert out.returncode == 0 and out.stdout.strip() == "24", out.stderr
    assert rotated not in postgres.log_text()
