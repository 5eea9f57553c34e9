"""A 100 MB result through the gateway streams with bounded gateway memory: the gateway relays each
DataRow as it comes and waits for a slow client, so it never holds the result."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jitgate.devstack.gateway import Gateway
from jitgate.devstack.postgres import Postgres
from tests.pg.conftest import MAINTAINER
from tests.pg.test_psycopg import Connect, connect  # noqa: F401  (the fixture)

MB = 1024 * 1024
ROWS, WIDTH = 10_000, 10_000  # 100 MB of values
# A gateway that buffered the result would grow by at least the result's 95 MB; one that streams it
# holds a few socket buffers and one message at a time.
BOUND = 40 * MB


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


def _reset_peak(pid: int) -> bool:
    """Set VmHWM back to the current RSS (Linux: `5` to clear_refs), so it measures this test alone."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    return False


def _stall(postgres: Postgres, app: str, pid: int) -> str:
    """A client that reads nothing until the server has sent everything or waits on its socket.

    The server's session (its application_name is the client's) either goes idle, having sent the
    whole result (so a relay that does not wait for its client now holds it), or waits in
    ClientWrite while the gateway's RSS stays put: the relay waits for the client, and so does the
    server. Either way the measure below is taken at the worst point, not after a fixed time.
    """
    sql = f"SELECT state, coalesce(wait_event, '') FROM pg_stat_activity WHERE application_name = '{app}'"
    last, steady = -1, 0
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        state, _, wait = postgres.psql(sql).strip().partition("|")
        if state == "idle":
            return "the server sent everything"
        rss = _status(pid, "VmRSS")
        steady = steady + 1 if wait == "ClientWrite" and abs(rss - last) < 512 * 1024 else 0
        if steady >= 5:
            return "the server waits for the gateway, the gateway for the client"
        last = rss
        time.sleep(0.2)
    raise AssertionError("the server neither finished nor waited")


def test_a_100_mb_result_streams_with_bounded_gateway_memory(
    connect: Connect, pg_mint: Callable[..., dict[str, Any]], pg_gateway: Gateway, postgres: Postgres  # noqa: F811
) -> None:
    app = "big-" + secrets.token_hex(4)
    # A grant with no row or byte limit; the gateway gives the server the client's application_name.
    conn = connect(pg_mint(MAINTAINER)["token"], autocommit=True, application_name=app)
    pid = pg_gateway.proc.pid
    conn.execute("SELECT 1").fetchall()  # the session is set up before the measure starts
    reset = _reset_peak(pid)
    base = _status(pid, "VmRSS")
    sampled = base
    rows = total = 0
    stalled = ""
    with conn.cursor() as cur:  # stream(): libpq's single-row mode, the client holds one row at a time
        for (value,) in cur.stream(f"SELECT repeat('x', {WIDTH}) FROM generate_series(1, {ROWS})"):
            rows += 1
            total += len(value)
            if rows == 1:
                stalled = _stall(postgres, app, pid)
            if rows % 250 == 0:
                sampled = max(sampled, _status(pid, "VmRSS"))
    peak = max(sampled, _status(pid, "VmHWM")) if reset else sampled
    growth = peak - base
    print(f"100 MB result: {stalled}; gateway RSS {base / MB:.0f} -> {peak / MB:.0f} MB (+{growth / MB:.1f} MB)")
    assert rows == ROWS and total == ROWS * WIDTH  # all of it, unchanged
    assert growth < BOUND, f"the gateway grew by {growth / MB:.1f} MB while relaying a {total // MB} MB result"
