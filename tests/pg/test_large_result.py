"""A 100 MB result through the gateway streams with bounded gateway memory: the gateway relays each
DataRow as it comes and waits for a slow client, so it never holds the result."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jitgate.devstack.gateway import Gateway
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


def test_a_100_mb_result_streams_with_bounded_gateway_memory(
    connect: Connect, pg_mint: Callable[..., dict[str, Any]], pg_gateway: Gateway  # noqa: F811
) -> None:
    conn = connect(pg_mint(MAINTAINER)["token"], autocommit=True)  # a grant with no row or byte limit
    pid = pg_gateway.proc.pid
    conn.execute("SELECT 1").fetchall()  # the session is set up before the measure starts
    reset = _reset_peak(pid)
    base = _status(pid, "VmRSS")
    sampled = base
    rows = total = 0
    with conn.cursor() as cur:  # stream(): libpq's single-row mode, the client holds one row at a time
        for (value,) in cur.stream(f"SELECT repeat('x', {WIDTH}) FROM generate_series(1, {ROWS})"):
            rows += 1
            total += len(value)
            if rows == 1:  # a slow client: the server could send the rest meanwhile, the gateway must wait
                time.sleep(3)
            if rows % 250 == 0:
                sampled = max(sampled, _status(pid, "VmRSS"))
    peak = max(sampled, _status(pid, "VmHWM")) if reset else sampled
    growth = peak - base
    print(f"100 MB result: gateway RSS {base / MB:.0f} MB -> peak {peak / MB:.0f} MB (+{growth / MB:.1f} MB)")
    assert rows == ROWS and total == ROWS * WIDTH  # all of it, unchanged
    assert growth < BOUND, f"the gateway grew by {growth / MB:.1f} MB while relaying a {total // MB} MB result"
