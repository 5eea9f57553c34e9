"""Chunked masking: a secret split across chunks is still masked; output equals whole-body masking."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jitgate.inspect import PII_TYPES, Scanner, StreamMasker
from jitgate.inspect.stream import HoldLimitExceeded
from tests.inspect import corpus


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def test_secret_split_across_two_chunks(scanner: Scanner) -> None:
    tok = corpus.PREFIXED["anthropic_api_key"](random.Random(1)).encode()
    data = b"data: " + b"x " * 3000 + tok + b" tail\n\n" + b"y " * 3000
    split = data.index(tok) + 20
    m = StreamMasker(scanner, window=1024)
    out = m.feed(data[:split]) + m.feed(data[split:]) + m.close()
    assert tok not in out and b"[REDACTED:anthropic_api_key:" in out
    assert [f.type for f in m.findings] == ["anthropic_api_key"]
    assert m.findings[0].start == data.index(tok)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31), cuts=st.lists(st.integers(0, 10**6), max_size=30))
def test_stream_output_equals_whole_body_masking(scanner: Scanner, seed: int, cuts: list[int]) -> None:
    body = corpus.rerank_body(seed, documents=6, secret_rate=0.7, pii_rate=0.5)
    data = body.encode()
    whole = scanner.scan(data, pii=PII_TYPES).masked(data)
    m = StreamMasker(scanner, pii=PII_TYPES, window=512)
    out = b"".join(m.feed(c) for c in _chunks(data, cuts)) + m.close()
    for planted in body.planted:
        if len(planted.value) < 512:
            assert not corpus.occurrences(out, planted.value), planted.type
    if all(len(p.value) < 512 for p in body.planted):
        assert out == whole


def test_long_pem_block_split_into_small_chunks_with_the_default_window(scanner: Scanner) -> None:
    rng = random.Random(8)
    pem = corpus._pem(rng)
    while len(pem) < 6000:  # a long key: many lines
        pem = pem.replace("\n-----END", "\n" + corpus._r(rng, corpus.ALNUM, 64) + "\n-----END", 1)
    data = b"x " * 5000 + pem.encode() + b" y" * 5000
    m = StreamMasker(scanner)
    out = b"".join(m.feed(data[i : i + 700]) for i in range(0, len(data), 700)) + m.close()
    assert b"PRIVATE KEY" not in out and out.count(b"[REDACTED:private_key:") == 1


def _aws_key(rng: random.Random) -> str:
    return "AKIA" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31), cuts=st.lists(st.integers(0, 10**6), max_size=30), pad=st.integers(0, 3000))
def test_escaped_secret_in_event_json_is_masked_for_any_chunking(
    scanner: Scanner, seed: int, cuts: list[int], pad: int
) -> None:
    """`\\u0041KIA…` inside an event's JSON string: a client's JSON parser reads an AWS key, so the
    stream decodes the escape, whatever the chunking (a string is held back until it is whole)."""
    rng = random.Random(seed)
    key = _aws_key(rng)
    text = "w" * pad + " \\n line \\u0041" + key[1:] + " \\\" end"
    data = b'data: {"text": "' + text.encode() + b'"}\n\n' + b"data: [DONE]\n\n"
    m = StreamMasker(scanner, pii=PII_TYPES, window=512, json_strings=True)
    out = b"".join(m.feed(c) for c in _chunks(data, cuts)) + m.close()
    assert key[1:].encode() not in out and b"[REDACTED:aws_access_key_id:" in out
    event = out.split(b"\n\n")[0].removeprefix(b"data: ")
    assert "[REDACTED:aws_access_key_id:" in json.loads(event)["text"]
    assert out.endswith(b"data: [DONE]\n\n")


def test_without_json_strings_the_escape_is_not_decoded(scanner: Scanner) -> None:
    key = _aws_key(random.Random(3))
    data = b'data: {"text": "\\u0041' + key[1:].encode() + b'"}\n\n'
    m = StreamMasker(scanner, window=512)
    assert key[1:].encode() in m.feed(data) + m.close()  # the reason leak_guard turns it on


def test_an_open_string_is_held_up_to_max_hold(scanner: Scanner) -> None:
    m = StreamMasker(scanner, window=512, json_strings=True, max_hold=4096)
    assert m.feed(b'{"text": "a \\n ' + b"b" * 1000) == b'{"text": '
    with pytest.raises(HoldLimitExceeded):
        for _ in range(10):
            m.feed(b"c" * 1000)


def test_a_long_string_goes_out_once_it_closes(scanner: Scanner) -> None:
    m = StreamMasker(scanner, window=512, json_strings=True)
    head = m.feed(b'{"a": "x", "text": "a \\n ' + b"b" * 5000)
    assert head == b'{"a": "x", "text": '  # held from the open string's quote on
    rest = m.feed(b'" , "z": 1}' + b" " * 600) + m.close()
    assert head + rest == b'{"a": "x", "text": "a \\n ' + b"b" * 5000 + b'" , "z": 1}' + b" " * 600
