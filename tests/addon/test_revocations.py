from __future__ import annotations

import threading
from typing import Any

from addon.revocations import RevocationList
from jitgate.state import fetch_revocations


class PagedTable:
    """A DynamoDB client stand-in answering one query in pages, recording what was asked."""

    def __init__(self, pages: list[list[str]]) -> None:
        self.pages = pages
        self.asked: list[dict[str, Any]] = []

    def query(self, **kw: Any) -> dict[str, Any]:
        self.asked.append(kw)
        i = len(self.asked) - 1
        page: dict[str, Any] = {"Items": [{"sk": {"S": jti}, "expires_at": {"N": "2000"}} for jti in self.pages[i]]}
        if i + 1 < len(self.pages):
            page["LastEvaluatedKey"] = {"pk": {"S": "revocation"}, "sk": {"S": self.pages[i][-1]}}
        return page


class OnePage:
    def query(self, **kw: Any) -> dict[str, Any]:
        return {"Items": [{"sk": {"S": "y"}, "expires_at": {"N": str(2**62)}}]}


def test_fetch_follows_pages() -> None:
    table = PagedTable([["a", "b"], ["c"], []])
    assert fetch_revocations(table, "t", now=1234.9) == frozenset({"a", "b", "c"})
    assert len(table.asked) == 3
    first = table.asked[0]
    assert first["ProjectionExpression"] == "sk, expires_at" and "ExclusiveStartKey" not in first
    assert table.asked[1]["ExclusiveStartKey"]["sk"] == {"S": "b"}


class Items:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def query(self, **kw: Any) -> dict[str, Any]:
        return {"Items": self.items}


def test_fetch_keeps_what_is_in_force_and_an_unreadable_expiry() -> None:
    table = Items([
        {"sk": {"S": "live"}, "expires_at": {"N": "1001"}},
        {"sk": {"S": "gone"}, "expires_at": {"N": "1000"}},
        {"sk": {"S": "no-expiry"}},
        {"sk": {"S": "bad-expiry"}, "expires_at": {"N": "soon"}},
    ])
    assert fetch_revocations(table, "t", now=1000.0) == frozenset({"live", "no-expiry", "bad-expiry"})


def test_freshness_follows_the_last_good_pull() -> None:
    mono = [100.0]
    revocations = RevocationList(clock=lambda: 0.0, monotonic=lambda: mono[0])
    revocations.staleness = 5.0
    assert not revocations.fresh()  # never pulled
    revocations.dynamodb = PagedTable([["x"]])
    assert revocations.refresh() and revocations.fresh() and "x" in revocations
    mono[0] += 5.5
    revocations.dynamodb = None  # the next pull fails
    assert not revocations.refresh()
    assert not revocations.fresh() and "x" in revocations  # the old list stays, but is stale


def test_background_thread_pulls_and_ticks_until_stopped() -> None:
    ticked = threading.Event()
    revocations = RevocationList()
    revocations.interval = 0.01
    revocations.dynamodb = OnePage()
    revocations.start(tick=ticked.set)
    try:
        assert ticked.wait(10)
    finally:
        revocations.stop()
    assert "y" in revocations
