"""`Scanner.may_find`: one pass over many short values (header values) that is False only when
scanning each value alone finds nothing, so leak_guard may skip the per-value scans."""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from urllib.parse import quote

import pytest

from jitgate.inspect import Scanner, actions
from jitgate.policy import MaskProfile
from tests.inspect import corpus

PII_TYPES = actions.plan(MaskProfile(), "request").pii_types
_MAKERS: list[Callable[[random.Random], str]] = [
    *corpus.PREFIXED.values(),
    *corpus.PII.values(),
    *(gen for _, gen in corpus.CONTEXTUAL.values()),
]


def _plain(rng: random.Random) -> str:
    return rng.choice(["gzip, deflate", "keep-alive", "python-httpx/0.28", "*/*", "max-age=0", "en-US,en;q=0.9"])


def _value(rng: random.Random) -> str:
    pick = rng.random()
    if pick < 0.5:
        return _plain(rng)
    made = rng.choice(_MAKERS)(rng)
    if pick < 0.65:
        return quote(made, safe="")  # URL-encoded
    if pick < 0.75:
        return base64.b64encode((made + " " + "x" * 60).encode()).decode()
    if pick < 0.85:
        return f"{_plain(rng)} {made}"  # inside text
    return made


def _finds(scanner: Scanner, value: bytes, literals: list[bytes]) -> bool:
    result = scanner.scan(value, pii=PII_TYPES, literals=literals)
    return bool(result.findings or result.edits)


@pytest.mark.parametrize("seed", range(60))
def test_nothing_found_alone_whenever_the_joined_pass_says_so(scanner: Scanner, seed: int) -> None:
    rng = random.Random(seed)
    values = [_value(rng).encode() for _ in range(rng.randint(1, 6))]
    literals = [rng.choice(values)[:12]] if rng.random() < 0.2 and values[0] else []
    any_alone = any(_finds(scanner, v, literals) for v in values)
    if any_alone:
        assert scanner.may_find(values, pii=PII_TYPES, literals=literals)


def test_plain_headers_need_no_per_value_scan(scanner: Scanner) -> None:
    values = [b"gzip, deflate", b"keep-alive", b"python-httpx/0.28.1", b"application/json", b"*/*"]
    assert not scanner.may_find(values, pii=PII_TYPES)
    assert not scanner.may_find([], pii=PII_TYPES)


def test_each_kind_alone_is_flagged(scanner: Scanner) -> None:
    rng = random.Random(7)
    for make in _MAKERS:
        value = make(rng).encode()
        if _finds(scanner, value, []):
            assert scanner.may_find([b"keep-alive", value], pii=PII_TYPES)
            assert scanner.may_find([value, b"keep-alive"], pii=PII_TYPES)
    literal = b"injected-" + bytes(rng.choice(b"abcdef") for _ in range(20))
    assert scanner.may_find([b"x", b"Bearer " + literal], literals=[literal])
