"""The Hyperscan forms of the PII rules find what the rules find.

The phone rule's Hyperscan pattern is a superset of how a match ends (`hs_ends`), the card rule's
consumes its left boundary, and the e-mail rule's is an unbounded prefix whose start the engine
clamps: each is checked here against the pure-`re` engine on text built from the pieces where
they could differ (separators, parentheses, decimal fractions, long digit and local-part runs,
JSON escapes, the ends of the buffer).
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jitgate.inspect import PII_TYPES, Scanner
from jitgate.inspect.engine import HyperscanEngine, ReEngine
from jitgate.inspect.rules import PII_RULES

_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

_PARTS = [
    " ", "-", ".", "(", ")", "+", "+1 ", "+44 ", "(415) ", "415-", "555-", "0132", "555 0132", "20 7946 0958",
    "0.13629831567813933", "11.131699753812605", "3.14159", ",", "}", "\\n", "\\t", "\\", '"', "tel:", "call ",
    "@", "bob", "ana.smith", "@example.org", "@mail.example.co.uk", ".com", "x", "_", "%", "4111 1111 1111 1111",
    "4111-1111-1111-1111", "4111111111111111", "378282246310005", "123-45-6789", "10.0.0.1", "2001:db8::1",
    "DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "3782 822463 10005", "3056 930902 5904",
    "6200 0000 0000 0000 005", "123 45 6789", "SSN: ", "fd35::21cc", "::ffff:", "::", "1.2.3.4", "v", "agent to ",
    "255.255.255.0", ".in-addr.arpa", "setup-",
]
_RUN_CHARS = "0123456789abcdefXYZ._%+-"


def _text(parts: list[str], rng: random.Random) -> bytes:
    for i in range(len(parts)):
        if rng.random() < 0.15:  # a run: digits, a long local part, a decimal fraction
            parts[i] = "".join(rng.choices(_RUN_CHARS if rng.random() < 0.5 else "0123456789", k=rng.randint(1, 90)))
    return "".join(parts).encode()


def _found(engine: HyperscanEngine | ReEngine, raw: bytes) -> list[tuple[str, int, int]]:
    return sorted((engine.rules[i].name, m.start(), m.end()) for i, m in engine.matches(raw))


@_SETTINGS
@given(parts=st.lists(st.sampled_from(_PARTS), max_size=40), seed=st.integers(0, 2**16))
def test_hyperscan_pii_patterns_find_what_the_rules_find(parts: list[str], seed: int) -> None:
    raw = _text(parts, random.Random(seed))
    assert _found(_HS, raw) == _found(_RE, raw)


@_SETTINGS
@given(parts=st.lists(st.sampled_from(_PARTS), max_size=40), seed=st.integers(0, 2**16))
def test_both_scanners_agree_on_pii(hs_scanner: Scanner, re_scanner: Scanner, parts: list[str], seed: int) -> None:
    raw = _text(parts, random.Random(seed))
    assert hs_scanner.scan(raw, pii=PII_TYPES).findings == re_scanner.scan(raw, pii=PII_TYPES).findings


def test_a_long_run_before_an_at_sign_costs_a_bounded_window() -> None:
    """A long local part before `@` must not make `re` search the whole run."""
    raw = b"a" * 200_000 + b"@example.org and bob@example.org"
    found = _found(_HS, raw)
    assert found == _found(_RE, raw) == [("email", 200_017, 200_032)]
    email = [r.name for r in _HS.rules].index("email")
    windows = [b - a for a, b in _HS.regions(raw)[email]]
    rule = _HS.rules[email]
    assert len(windows) == 2 and max(windows) <= rule.max_len + rule.hs_max_len  # not the 200 kB run


def test_decimal_fractions_are_no_phone_or_card_candidates() -> None:
    """A rerank answer's scores gave every float a phone and a card candidate, each confirmed by `re`."""
    scores = b",".join(b'{"index": %d, "relevance_score": 0.%d}' % (i, 13629831567813933 + i) for i in range(50))
    raw = b'{"results": [' + scores + b"]}"
    assert _HS.reports(raw) == []
    assert _found(_RE, raw) == []


_HS = HyperscanEngine(PII_RULES)
_RE = ReEngine(PII_RULES)
