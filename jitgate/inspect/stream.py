"""Masking a body that arrives in chunks: an overlap window keeps a split secret whole.

Each chunk is appended to the bytes held back from the last one; the whole buffer is scanned,
everything but the last `window` bytes goes out masked, and a masking edit that straddles the
cut pulls the cut back to its start. A value shorter than the window that is not yet complete
therefore always sits in the held-back tail, so no byte goes out unscanned or half-masked.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from jitgate.inspect.masking import Hit
from jitgate.inspect.rules import RULES
from jitgate.inspect.scanner import Edit, Scanner, open_string_start

# Longer than the longest match any rule can make (a PEM block), rounded up to 1 KiB.
DEFAULT_WINDOW = (max(r.max_len for r in RULES) // 1024 + 1) * 1024
# Bytes already sent that are scanned again as left context (lookbehinds, word boundaries).
LEFT_CONTEXT = 64


class HoldLimitExceeded(ValueError):
    """A JSON string with an escape stayed open past `max_hold` bytes: it cannot be inspected whole."""


class StreamMasker:
    """Feed chunks, get masked bytes back; `close()` flushes the held-back tail.

    With `json_strings`, `\\u` escapes in JSON strings are decoded and scanned too (an event stream's
    JSON events, a chunked JSON answer). A string is decoded only once it is whole, so the cut
    never falls inside one: it is held back until it closes, at most `max_hold` bytes (then
    `HoldLimitExceeded`). `requote` as for `Scanner.scan` (True for JSON text).
    """

    def __init__(
        self,
        scanner: Scanner,
        *,
        pii: Collection[str] = (),
        literals: Sequence[bytes] = (),
        window: int = DEFAULT_WINDOW,
        json_strings: bool = False,
        requote: bool = False,
        max_hold: int = 16 * 1024 * 1024,
    ) -> None:
        if window < 256:
            raise ValueError("the overlap window must be at least 256 bytes")
        self._json = json_strings
        self._requote = requote
        self._max_hold = max_hold
        self._scanner = scanner
        self._pii = pii
        self._literals = literals
        self._window = window
        self._carry = b""
        self._left = b""
        self._offset = 0  # stream offset of the first held-back byte
        self.findings: list[Hit] = []
        self.total = 0

    def feed(self, chunk: bytes) -> bytes:
        self.total += len(chunk)
        buf = self._carry + chunk
        if len(buf) <= self._window:
            self._carry = buf
            return b""
        return self._emit(buf, len(buf) - self._window)

    def close(self) -> bytes:
        buf, self._carry = self._carry, b""
        return self._emit(buf, len(buf), final=True) if buf else b""

    def _emit(self, buf: bytes, cut: int, *, final: bool = False) -> bytes:
        ctx = len(self._left)
        if self._json and not final:
            start = open_string_start(self._left + buf, ctx + cut, ctx)
            if start is not None:
                if len(buf) - (start - ctx) > self._max_hold:
                    raise HoldLimitExceeded("a JSON string is longer than the stream may hold")
                cut = start - ctx
        result = self._scanner.scan(
            self._left + buf, pii=self._pii, literals=self._literals, json_strings=self._json, requote=self._requote
        )
        # Back to `buf` coordinates; what starts in the left context was decided last time.
        edits = sorted((_shift(e, -ctx) for e in result.edits if e.start >= ctx), key=lambda e: e.start)
        findings = [_shift(f, -ctx) for f in result.findings if f.start >= ctx]
        for e in reversed(edits):
            if e.first < cut < e.end:
                cut = e.first
        out_edits: list[Edit] = [e for e in edits if e.end <= cut]
        parts: list[bytes] = []
        last = 0
        for e in out_edits:
            parts.append(buf[last : e.start])
            parts.append(e.replacement)
            last = e.end
        parts.append(buf[last:cut])
        self.findings.extend(_shift(f, self._offset) for f in findings if f.end <= cut)
        self._left = (self._left + buf[:cut])[-LEFT_CONTEXT:]
        self._carry = buf[cut:]
        self._offset += cut
        return b"".join(parts)


def _shift[T: (Edit, Hit)](item: T, by: int) -> T:
    return item._replace(start=item.start + by, end=item.end + by, anchor=item.anchor + by)
