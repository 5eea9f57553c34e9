"""Where in a JSON document a byte offset lies, as a path (`$.documents[3].text`), for records.

Findings are found in the raw text; a record is more useful saying which document held one.
A single pass over the tokens (strings matched whole, in C) keeps a stack of containers and
stops once every asked-for offset is placed; it runs only when there are findings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\],:]|[^\s{}\[\],:"]+')


def _render(stack: list[list[object]]) -> str:
    out = "$"
    for frame in stack:
        kind, key = frame[0], frame[1]
        if kind == "arr":
            out += f"[{key}]"
        elif key is not None:
            out += f".{key}" if isinstance(key, str) and key.isidentifier() else f"[{json.dumps(key)}]"
    return out


def locate(raw: bytes, offsets: Sequence[int]) -> dict[int, str]:
    """JSON paths of `offsets` in `raw` (offsets outside any token are left out)."""
    pending = sorted(set(offsets))
    found: dict[int, str] = {}
    if not pending:
        return found
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
