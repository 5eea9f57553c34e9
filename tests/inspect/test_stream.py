"""Chunked masking: a secret split across chunks is still masked; output equals whole-body masking."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jitgate.inspect import PII_TYPES, Scanner, StreamMasker
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
