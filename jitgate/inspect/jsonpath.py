"""Where in a JSON document a byte offset lies, as a path (`$.documents[3].text`), for records.

Findings are found in the raw text; a record is more useful saying which document held one.
A single pass over the tokens (strings matched whole, in C) keeps a stack of containers and
stops once every asked-for offset is placed; it runs only when there are findings.

A path names the keys on the way, and a key is text the client wrote: a key that overlaps a
`hidden` span (a finding's) is written `*`, so a secret used as a key name never reaches a record
through its path (`{"meta": {"AKIA…": 1}}` is `$.meta.* (key)`).
"""

from __future__ import annotations

import bisect
import itertools
import json
import re
from collections.abc import Sequence

HIDDEN_KEY = "*"

_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\],:]|[^\s{}\[\],:"]+')


def _render(stack: list[list[object]]) -> str:
    out = "$"
    for frame in stack:
        kind, key = frame[0], frame[1]
        if kind == "arr":
            out += f"[{key}]"
        elif key is HIDDEN_KEY:
            out += "." + HIDDEN_KEY
        elif key is not None:
            out += f".{key}" if isinstance(key, str) and key.isidentifier() else f"[{json.dumps(key)}]"
    return out


class _Spans:
    """Does a byte range overlap any of some (start, end) spans? (a bisect over the sorted starts)."""

    def __init__(self, spans: Sequence[tuple[int, int]]) -> None:
        ordered = sorted(spans)
        self._starts = [s for s, _ in ordered]
        self._max_end = list(itertools.accumulate((e for _, e in ordered), max))

    def overlap(self, start: int, end: int) -> bool:
        i = bisect.bisect_left(self._starts, end)  # spans starting before `end`
        return i > 0 and self._max_end[i - 1] > start


def locate(raw: bytes, offsets: Sequence[int], hidden: Sequence[tuple[int, int]] = ()) -> dict[int, str]:
    """JSON paths of `offsets` in `raw` (offsets outside any token are left out); keys overlapping
    a `hidden` (start, end) span are written `*`."""
    pending = sorted(set(offsets))
    found: dict[int, str] = {}
    if not pending:
        return found
    secret = _Spans(hidden)
    stack: list[list[object]] = []  # [kind, key or index, expecting_key]
    i = 0
    for m in _TOKEN.finditer(raw):
        start, end = m.span()
        while i < len(pending) and pending[i] < start:
            i += 1  # between tokens (whitespace): no path
        tok = raw[start:end]
        top = stack[-1] if stack else None
        is_key = top is not None and top[0] == "obj" and top[2] is True and tok[:1] == b'"'
        if is_key and top is not None:
            if secret.overlap(start, end):
                top[1] = HIDDEN_KEY
            else:
                try:
                    top[1] = json.loads(tok)
                except ValueError:
                    top[1] = tok.decode("utf-8", "replace")
        while i < len(pending) and pending[i] < end:
            found[pending[i]] = _render(stack) + (" (key)" if is_key else "")
            i += 1
        if i >= len(pending):
            break
        if tok == b"{":
            stack.append(["obj", None, True])
        elif tok == b"[":
            stack.append(["arr", 0, False])
        elif tok in (b"}", b"]"):
            if stack:
                stack.pop()
        elif tok == b"," and top is not None:
            if top[0] == "arr":
                top[1] = int(top[1]) + 1  # type: ignore[call-overload]
            else:
                top[2] = True
        elif tok == b":" and top is not None:
            top[2] = False
    return found
