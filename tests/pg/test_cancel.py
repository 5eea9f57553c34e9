"""Cancel through the gateway: psql's Ctrl-C and psycopg's cancel stop the running statement (57014);
a CancelRequest with a key the gateway never gave does nothing."""

from __future__ import annotations

import secrets
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from jitgate.devstack.gateway import Gateway
from jitgate.devstack.postgres import Postgres
from tests.pg.conftest import MAINTAINER
from tests.pg.test_psycopg import Connect, connect  # noqa: F401  (the fixture)

# Long enough never to end on its own here, and no pg_sleep (refused): a count over a huge series.
# statement_timeout is only a backstop: its 57014 says "statement timeout", not "user request".
LONG = "SELECT count(*) FROM generate_series(1, 100000000000) AS g -- {mark}"
BACKSTOP = "SET statement_timeout = '600s'"


def _running(postgres: Postgres, mark: str) -> bool:
    sql = f"SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%-- {mark}%'"
    return postgres.psql(sql + " AND pid <> pg_backend_pid()").strip() == "1"


def _wait_running(postgres: Postgres, mark: str) -> None:
    deadline = time.monotonic() + 60
    while not _running(postgres, mark):
        assert time.monotonic() < deadline, "the long statement never started on the server"
        time.sleep(0.1)


def _raw_cancel(port: int, key: bytes) -> None:
    """A CancelRequest as libpq sends it (plain TCP); returns once the gateway has closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(struct.pack("!II", 16, 80877102) + key)
        assert sock.recv(1) == b""


def _run_in_thread(conn: psycopg.Connection[Any], sql: str) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["rows"] = conn.execute(sql).fetchall()
        except psycopg.Error as exc:
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


@pytest.mark.parametrize("how", ["cancel", "cancel_safe"])  # PQcancel in clear; libpq 17's inside TLS
def test_psycopg_cancel_stops_the_statement(
    how: str, connect: Connect, pg_mint: Callable[..., dict[str, Any]],  # noqa: F811
    postgres: Postgres, pg_gateway: Gateway,
) -> None:
    conn = connect(pg_mint(MAINTAINER)["token"], autocommit=True)
    conn.execute(BACKSTOP)
    mark = secrets.token_hex(6)
    thread, result = _run_in_thread(conn, LONG.format(mark=mark))
    _wait_running(postgres, mark)
    assert pg_gateway.pg_port is not None
    _raw_cancel(pg_gateway.pg_port, secrets.token_bytes(8))  # a key the gateway never gave
    assert _running(postgres, mark)  # nothing was cancelled
    getattr(conn, how)()
    thread.join(120)
    assert not thread.is_alive()
    err = result.get("error")
    assert isinstance(err, psycopg.errors.QueryCanceled), result
    assert err.sqlstate == "57014" and "user request" in str(err)
    assert conn.execute("SELECT count(*) FROM candidates").fetchone() is not None  # the session goes on


def test_psql_ctrl_c_stops_the_statement(
    pg_mint: Callable[..., dict[str, Any]], pg_env: Callable[..., dict[str, str]], postgres: Postgres
) -> None:
    mark = secrets.token_hex(6)
    proc = subprocess.Popen(
        ["psql", "-X", "-At", "-c", BACKSTOP, "-c", LONG.format(mark=mark)],
        env=pg_env(pg_mint(MAINTAINER)["token"]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_running(postgres, mark)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does: psql sends a CancelRequest with its key
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "canceling statement due to user request" in err, err
    assert proc.returncode == 1
    assert not _running(postgres, mark)
