"""Properties over generated rerank bodies: idempotent masking, valid JSON, no survivor, negatives intact."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jitgate.inspect import PII_TYPES, Scanner
from tests.inspect import corpus

_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
seeds = st.integers(min_value=0, max_value=2**32 - 1)


@_SETTINGS
@given(seed=seeds, objects=st.booleans())
def test_masked_body_is_valid_json_with_same_documents(scanner: Scanner, seed: int, objects: bool) -> None:
    body = corpus.rerank_body(seed, documents=8, objects=objects)
    raw = body.encode()
    out = json.loads(scanner.scan(raw, pii=PII_TYPES, json_strings=True).masked(raw))
    docs = body.payload["documents"]
    assert len(out["documents"]) == len(docs)
    assert out.keys() == body.payload.keys()
    if objects:
        assert [d["id"] for d in out["documents"]] == [d["id"] for d in docs]


@_SETTINGS
@given(seed=seeds)
def test_masking_is_idempotent(scanner: Scanner, seed: int) -> None:
    raw = corpus.rerank_body(seed, documents=8).encode()
    once = scanner.scan(raw, pii=PII_TYPES, json_strings=True).masked(raw)
    again = scanner.scan(once, pii=PII_TYPES, json_strings=True)
    assert again.findings == []
    assert again.masked(once) == once


@_SETTINGS
@given(seed=seeds)
def test_no_planted_secret_or_pii_survives(scanner: Scanner, seed: int) -> None:
    body = corpus.rerank_body(seed, documents=8, secret_rate=0.8, pii_rate=0.6)
    raw = body.encode()
    masked = scanner.scan(raw, pii=PII_TYPES, json_strings=True).masked(raw)
    for planted in body.planted:
        assert not corpus.occurrences(masked, planted.value), planted.type


@_SETTINGS
@given(seed=seeds)
def test_negatives_are_untouched(scanner: Scanner, seed: int) -> None:
    body = corpus.rerank_body(seed, documents=8, secret_rate=0.0, pii_rate=0.0, negative_rate=1.0)
    raw = body.encode()
    result = scanner.scan(raw, pii=PII_TYPES, json_strings=True)
    assert result.findings == []
    assert result.masked(raw) == raw


@_SETTINGS
@given(seed=seeds)
def test_both_engines_return_the_same_findings(hs_scanner: Scanner, re_scanner: Scanner, seed: int) -> None:
    raw = corpus.rerank_body(seed, documents=10).encode()
    a = hs_scanner.scan(raw, pii=PII_TYPES, json_strings=True)
    b = re_scanner.scan(raw, pii=PII_TYPES, json_strings=True)
    assert a.findings == b.findings
    assert a.masked(raw) == b.masked(raw)


@_SETTINGS
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_engines_agree_on_arbitrary_text(hs_scanner: Scanner, re_scanner: Scanner, text: str) -> None:
    raw = text.encode("utf-8", "surrogatepass")
    assert hs_scanner.scan(raw, pii=PII_TYPES).findings == re_scanner.scan(raw, pii=PII_TYPES).findings
