"""psql, unchanged, through the real gateway to the real Postgres."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

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
