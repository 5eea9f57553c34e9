"""What a body is, decided once, the way a JSON parser decides it.

The inspection reads bytes; the upstream (and the client) read what a JSON parser makes of them.
Python's `json.loads(bytes)` guesses UTF-16 or UTF-32 from a byte order mark or from NUL bytes in
the first four bytes and skips any amount of leading whitespace; other parsers take duplicate keys
first or last, and some take `NaN`. Whatever one side reads differently from the other is a
bypass, so a body is read here once, by one rule, and every reader (scanner, scope, approval, the
record) uses the answer:

- JSON between systems is UTF-8 (RFC 8259 §8.1): a body that any JSON parser could read as
  another encoding (a BOM, a NUL in the first four bytes, bytes that are no UTF-8) is `NOT_UTF8`.
- A request body that is JSON must be strict JSON: no duplicate keys at any depth, no `NaN` or
  `Infinity`, no number that overflows a double, not nested past the parser's depth. A body that
  a lenient parser takes but the strict one does not, or that looks like JSON (or says it is) and
  does not parse, is `INVALID_JSON`.
- A body is scanned as JSON text (its strings may hide values behind `\\u` escapes) when it says
  it is JSON, when its first non-whitespace character opens an object, array or string, or when
  it parses.
"""

from __future__ import annotations

import codecs
import enum
import json
import math
from dataclasses import dataclass
from typing import Any, Final

from jitgate.errors import BodyInvalidJson, BodyNotUtf8, JitgateError


class _NotJson:
    def __repr__(self) -> str:
        return "NOT_JSON"


NOT_JSON: Final[Any] = _NotJson()  # the body is there but is no JSON


class Problem(enum.Enum):
    """Why a body cannot be inspected as sent."""

    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"


@dataclass(frozen=True, slots=True)
class BodyText:
    """One body as the inspection reads it."""

    value: Any  # the parsed JSON value; None for no body; NOT_JSON for text
    json_text: bool  # scan it as JSON text (decode escapes in strings)
    problem: Problem | None = None  # set: the body may not pass


EMPTY: Final = BodyText(None, False)
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")  # UTF-8, UTF-16 LE / BE (and UTF-32 LE, which starts so)
_JSON_OPENERS = frozenset("{[\"")


class _Strictness(ValueError):
    """Valid for a lenient parser, not for the strict one."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Strictness("duplicate key")
    return out


def _constant(name: str) -> Any:
    raise _Strictness(name)


def _overflowed(value: Any) -> bool:
    """An infinite float anywhere in a parsed value: a number that overflowed a double (`Infinity`
    itself is refused by `parse_constant`). One walk of the value after the C parse costs far less
    than a `parse_float` call per number or a search of the raw bytes for number shapes."""
    stack = [value]
    pop, push = stack.pop, stack.extend
    while stack:
        node = pop()
        kind = type(node)
        if kind is float:
            if math.isinf(node):
                return True
        elif kind is list:
            push(node)
        elif kind is dict:
            push(node.values())
    return False


def loads_strict(text: str) -> Any:
    """`json.loads`, refusing duplicate keys, NaN / Infinity and overflowing numbers (`ValueError`,
    or `RecursionError` past the parser's depth)."""
    value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant)
    if _overflowed(value):
        raise _Strictness("number overflows")
    return value


def utf8_text(body: bytes) -> str | None:
    """`body` as text when every JSON parser reads it as this UTF-8 text; None otherwise."""
    if body.startswith(_BOMS) or b"\x00" in body[:4]:
        return None  # a BOM, or what json.detect_encoding takes for UTF-16 / UTF-32
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return None


def declares_json(content_type: str) -> bool:
    return "json" in content_type.lower()


def read(body: bytes, content_type: str = "", *, strict: bool) -> BodyText:
    """Read `body` (already content-decoded). `strict`: a request, which must be strict JSON when
    it is JSON at all; an answer only has to be UTF-8 (its JSON value, if any, is parsed leniently)."""
    if not body:
        return EMPTY
    text = utf8_text(body)
    if text is None:
        return BodyText(NOT_JSON, False, Problem.NOT_UTF8)
    declared = declares_json(content_type)
    looks = declared or text.lstrip()[:1] in _JSON_OPENERS
    if not strict:
        try:
            return BodyText(json.loads(text), True)
        except (ValueError, RecursionError):
            return BodyText(NOT_JSON, looks)
    try:
        return BodyText(loads_strict(text), True)
    except _Strictness:
        return BodyText(NOT_JSON, True, Problem.INVALID_JSON)
    except RecursionError:
        return BodyText(NOT_JSON, True, Problem.INVALID_JSON)
    except ValueError:
        pass
    if looks:
        return BodyText(NOT_JSON, True, Problem.INVALID_JSON)
    try:
        json.loads(text)  # what a lenient parser takes (`NaN`, `-Infinity`) is JSON it must not see
    except (ValueError, RecursionError):
        return BodyText(NOT_JSON, False)
    return BodyText(NOT_JSON, True, Problem.INVALID_JSON)


def refusal(problem: Problem) -> JitgateError:
    """The answer to a request whose body has `problem` (nothing of it is forwarded)."""
    if problem is Problem.NOT_UTF8:
        return BodyNotUtf8("the request body is not UTF-8 without a byte order mark (RFC 8259); nothing was forwarded")
    msg = "the request body is no strict JSON (duplicate keys, NaN, an out-of-range number, too deep or unparsable)"
    return BodyInvalidJson(msg + "; nothing was forwarded")


class Utf8Stream:
    """The rule of `utf8_text` for a body that arrives in pieces: `feed` raises ValueError at the
    first piece that breaks it (a BOM or NUL in the first four bytes, bytes that are no UTF-8)."""

    def __init__(self) -> None:
        self._head = b""
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def feed(self, data: bytes, *, final: bool = False) -> None:
        if len(self._head) < 4:
            self._head += data[: 4 - len(self._head)]
            if self._head.startswith(_BOMS) or b"\x00" in self._head:
                raise ValueError("not UTF-8 without a byte order mark")
        self._decoder.decode(data, final)
