"""Masking: every occurrence, over its full span, as `[REDACTED:<type>:<tag>]`.

The tag is a short HMAC of the value under a gateway key, so the same secret correlates
across records without being revealed (nor guessable from the record without the key).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from typing import Literal, NamedTuple

TAG_CHARS = 10
MARKER = re.compile(rb"\[REDACTED:[a-z0-9_]{1,64}:[0-9a-f]{" + str(TAG_CHARS).encode() + rb"}\]")


class Hit(NamedTuple):
    """One detected value: its type, its span in the scanned buffer and its keyed tag. A
    scanner's hit, not yet a finding: `jitgate.leaks.finding_records` makes each one the finding
    type every path keeps (`jitgate.records.Finding`: where it was, what was done).

    A NamedTuple rather than a frozen dataclass: a busy body makes thousands, and tuples are
    built several times faster.
    """

    type: str
    kind: Literal["secret", "pii"]
    start: int
    end: int
    tag: str
    # How the value was found: raw text, or inside a decoded JSON string, base64 blob, URL-encoding.
    encoding: str = "raw"
    # Where the whole match began (a keyword before an assigned value): streaming never cuts there.
    anchor: int = -1


# The hit's name before it had its own: addon/pg_listener.py still imports it so (another branch
# changes that module now). The same type, not another.
Finding = Hit


def tag(key: bytes, value: bytes) -> str:
    return hmac.new(key, value, hashlib.sha256).hexdigest()[:TAG_CHARS]


class Tagger:
    """`tag` bound to a key: HMAC-SHA256 (RFC 2104) with the padded-key states computed once.

    Copying two prepared SHA-256 states costs half of `hmac.new` per value; the result is the
    same MAC (the tests compare it with `hmac`).
    """

    _BLOCK = 64

    def __init__(self, key: bytes) -> None:
        if len(key) > self._BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(self._BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def __call__(self, value: bytes) -> str:
        inner = self._inner.copy()
        inner.update(value)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()[:TAG_CHARS]


def marker(finding: Hit) -> bytes:
    return b"[REDACTED:%s:%s]" % (finding.type.encode(), finding.tag.encode())


def apply(buf: bytes, findings: Sequence[Hit]) -> bytes:
    """`buf` with each finding's span replaced by its marker (findings must not overlap)."""
    if not findings:
        return buf
    parts: list[bytes] = []
    last = 0
    for f in sorted(findings, key=lambda f: f.start):
        parts.append(buf[last : f.start])
        parts.append(marker(f))
        last = f.end
    parts.append(buf[last:])
    return b"".join(parts)
