"""Property tests: whatever JSON a client or upstream sends, the digest never fails, stays
under its cap and never lets an embedding vector through."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from jitgate import digest

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6),
    max_leaves=40,
)
_vector = st.lists(st.floats(-1, 1, allow_nan=False), min_size=1, max_size=40)


def _number_lists(value: Any) -> list[list[Any]]:
    if isinstance(value, list):
        found = [value] if value and all(isinstance(x, int | float) and not isinstance(x, bool) for x in value) else []
        return found + [n for v in value for n in _number_lists(v)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _number_lists(v)]
    return []


@settings(max_examples=200, deadline=None)
@given(request=_json, response=_json)
def test_summarize_rerank_never_fails(request: Any, response: Any) -> None:
    s = digest.summarize_rerank(request, response)
    assert s.doc_count is None or s.doc_count == len(s.doc_sha256) or s.doc_count > digest.MAX_DOC_HASHES


@settings(max_examples=200, deadline=None)
@given(body=_json, limit=st.integers(1, 400), vectors=st.lists(_vector, max_size=3))
def test_digest_body_is_capped_and_vector_free(body: Any, limit: int, vectors: list[list[float]]) -> None:
    doc = {"payload": body, "embeddings": vectors}
    d = digest.digest_body(json.dumps(doc).encode(), location="response", limit=limit)
    assert d.text is not None and len(d.text.encode()) <= limit
    assert d.truncated == (
        len(json.dumps(digest.redact_vectors(doc, "response")[0], separators=(",", ":"), ensure_ascii=False).encode())
        > limit
    )
    assert len([v for v in d.vectors if ".embeddings" in v.location]) == len(vectors)
    redacted, _ = digest.redact_vectors(doc, "response")
    assert _number_lists(redacted["embeddings"]) == []


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(max_size=200), limit=st.integers(1, 100))
def test_digest_body_takes_any_bytes(raw: bytes, limit: int) -> None:
    d = digest.digest_body(raw, location="request", limit=limit)
    assert d.text is None if not raw else len(d.text.encode()) <= limit
