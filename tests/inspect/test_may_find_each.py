"""`Scanner.may_find_each`: one engine pass over a burst of values (Postgres DataRow values) that
flags each value scanning might find something in; the unflagged ones are not scanned alone."""

from __future__ import annotations

import json
import random

import pytest

from jitgate.inspect import Scanner, actions
from jitgate.policy import MaskProfile
from tests.inspect import corpus
from tests.inspect.test_may_find import _value

PII_TYPES = actions.plan(MaskProfile(), "response").pii_types
CLEAN = [b"a short candidate body about rerankers", b"42", b"", b"ranked second of fifty"]


def _finds(scanner: Scanner, value: bytes, *, json_strings: bool = False) -> bool:
    result = scanner.scan(value, pii=PII_TYPES, json_strings=json_strings)
    return bool(result.findings or result.edits)


def test_a_secret_among_clean_values_flags_only_its_value(scanner: Scanner) -> None:
    secret = corpus.PREFIXED["github_pat"](random.Random(3)).encode()
    values = [*CLEAN, b"deploy with " + secret, *CLEAN]
    flags = scanner.may_find_each(values, pii=PII_TYPES)
    assert flags == [False] * len(CLEAN) + [True] + [False] * len(CLEAN)
    assert scanner.may_find_each([], pii=PII_TYPES) == []


def test_a_secret_split_across_two_values_is_neither_one_nor_missed(scanner: Scanner) -> None:
    secret = corpus.PREFIXED["github_pat"](random.Random(5)).encode()
    head, tail = secret[:20], secret[20:]
    values = [b"clean", head, tail, b"clean"]
    flags = scanner.may_find_each(values, pii=PII_TYPES)
    for k, value in enumerate(values):  # whatever scanning alone finds is flagged
        if _finds(scanner, value):
            assert flags[k]
    # Joined, the two halves hold no secret: neither half alone is found as the whole.
    assert not any(f.type == "github_pat" for v in (head, tail) for f in scanner.scan(v, pii=PII_TYPES).findings)
    whole = scanner.may_find_each([b"clean", secret, b"clean"], pii=PII_TYPES)
    assert whole == [False, True, False]


@pytest.mark.parametrize("kind", sorted(corpus.PII))
def test_every_pii_type_is_flagged_where_it_is(scanner: Scanner, kind: str) -> None:
    rng = random.Random(kind)
    for _ in range(5):
        value = f"contact {corpus.PII[kind](rng)} today".encode()
        if not _finds(scanner, value):
            continue
        assert scanner.may_find_each([b"clean", value, b"clean"], pii=PII_TYPES) == [False, True, False]
        assert scanner.may_find_each([value], pii=PII_TYPES) == [True]


def test_a_json_escaped_email_is_flagged() -> None:
    scanner = Scanner(b"k" * 32)
    value = json.dumps({"contact": "ada\u0040example.com"}, ensure_ascii=True).replace("@", "\\u0040").encode()
    assert b"\\u0040" in value
    assert _finds(scanner, value, json_strings=True)
    assert scanner.may_find_each([b"clean", value], pii=PII_TYPES) == [False, True]


@pytest.mark.parametrize("seed", range(40))
def test_the_same_as_scanning_each_value_alone(scanner: Scanner, seed: int) -> None:
    rng = random.Random(seed)
    values = [_value(rng).encode() for _ in range(rng.randint(1, 50))]
    flags = scanner.may_find_each(values, pii=PII_TYPES)
    assert len(flags) == len(values)
    for value, flag in zip(values, flags, strict=True):
        if _finds(scanner, value) or _finds(scanner, value, json_strings=True):
            assert flag, value
    clean = [v for v, f in zip(values, flags, strict=True) if not f]
    assert all(not _finds(scanner, v) for v in clean)


def test_a_match_straddling_two_values_flags_both_and_is_no_finding(scanner: Scanner) -> None:
    pem = corpus._pem(random.Random(1)).encode()
    first, rest = pem.rsplit(b"\n", 1)  # the block, and its END line alone (no candidate there)
    values = [b"clean", first, rest, b"clean"]
    assert scanner.may_find_each([rest], pii=PII_TYPES) == [False]
    assert scanner.scan(b"\n".join(values)).findings  # joined, the block is whole
    assert scanner.may_find_each(values, pii=PII_TYPES) == [False, True, True, False]
    assert not _finds(scanner, first) and not _finds(scanner, rest)  # each alone holds none
