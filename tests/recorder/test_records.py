from __future__ import annotations

import hashlib
import json
import random

import pytest

from jitgate import digest
from jitgate.records import COLUMNS, SessionRecord, duckdb_type, iso_ts, model_field_names, record_id


def test_one_field_per_column_in_order() -> None:
    assert model_field_names() == tuple(name for name, _ in COLUMNS)


def test_json_line_has_every_column_even_when_unknown() -> None:
    rec = SessionRecord(record_id="r", ts=iso_ts(0), gateway="g", flow_id="f", method="GET", host="h", path="/")
    line = rec.to_json_line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert list(json.loads(line)) == [name for name, _ in COLUMNS]


def test_record_id_is_stable_per_flow_and_distinct_across_flows() -> None:
    assert record_id("gw1", "f1") == record_id("gw1", "f1")
    assert len({record_id("gw1", "f1"), record_id("gw1", "f2"), record_id("gw2", "f1")}) == 3


def test_iso_ts_is_utc_millis() -> None:
    assert iso_ts(1_800_000_000.1234) == "2027-01-15T08:00:00.123Z"


@pytest.mark.parametrize(
    ("glue", "duck"),
    [
        ("string", "VARCHAR"),
        ("bigint", "BIGINT"),
        ("array<string>", "VARCHAR[]"),
        ("array<struct<index:int,score:double>>", 'STRUCT("index" INTEGER, "score" DOUBLE)[]'),
    ],
)
def test_duckdb_types(glue: str, duck: str) -> None:
    assert duckdb_type(glue) == duck


def test_duckdb_type_rejects_unknown() -> None:
    with pytest.raises(ValueError):
        duckdb_type("map<string,string>")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    ("request_body", "response_body", "scores"),
    [
        # Cohere v1/v2 and Jina: {query, documents}, results[{index, relevance_score}]
        (
            {"query": "q", "documents": ["a", "b", "c"]},
            {"results": [{"index": 2, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.1}]},
            [0.9, 0.1],
        ),
        (
            {"query": "q", "documents": [{"text": "a"}, {"text": "b"}, {"text": "c"}]},
            {"results": [{"index": 2, "relevance_score": 0.5}, {"index": 0, "relevance_score": 0.2}]},
            [0.5, 0.2],
        ),
        # Voyage: data[...]
        (
            {"query": "q", "documents": ["a", "b", "c"]},
            {"data": [{"index": 2, "relevance_score": 0.7}, {"index": 0, "relevance_score": 0.3}]},
            [0.7, 0.3],
        ),
        # TEI: texts, bare list with score
        ({"query": "q", "texts": ["a", "b", "c"]}, [{"index": 2, "score": 3.0}, {"index": 0, "score": -1.0}], [3, -1]),
    ],
)
def test_summarize_rerank_dialects(request_body: object, response_body: object, scores: list[float]) -> None:
    s = digest.summarize_rerank(request_body, response_body)
    assert s.query == "q"
    assert s.doc_count == 3
    assert s.doc_sha256 == (_sha("a"), _sha("b"), _sha("c"))
    assert [(r["index"], r["score"]) for r in s.ranking] == [(2, scores[0]), (0, scores[1])]


def test_summarize_rerank_tolerates_garbage() -> None:
    assert digest.summarize_rerank("nope", None) == digest.RerankSummary()
    s = digest.summarize_rerank({"query": 3, "documents": "x"}, {"results": [{"index": True}, "x"]})
    assert s.query is None and s.doc_count is None and s.ranking == ()


def test_structured_document_without_text_hashes_canonical_json() -> None:
    a = digest.document_fingerprint({"b": 1, "a": "x"})
    assert a == digest.document_fingerprint({"a": "x", "b": 1})
    assert a != digest.document_fingerprint({"a": "y", "b": 1})


def test_vectors_become_dimension_and_hash() -> None:
    rng = random.Random(7)
    vec = [rng.random() for _ in range(16)]
    body = {"query_embeddings": [vec], "n_results": 3, "distances": [[0.1, 0.2]]}
    out, digests = digest.redact_vectors(body, "request")
    assert out["n_results"] == 3 and out["distances"] == [[0.1, 0.2]]
    assert out["query_embeddings"][0]["$vector"]["dim"] == 16
    assert len(digests) == 1 and digests[0].location == "request.query_embeddings[0]"
    assert digests[0].sha256 == _sha(json.dumps(vec, separators=(",", ":")))
    assert str(vec[3]) not in json.dumps(out)


def test_long_number_list_anywhere_is_a_vector() -> None:
    vec = [0.5] * 300
    out, digests = digest.redact_vectors({"x": {"y": vec}}, "response")
    assert out == {"x": {"y": {"$vector": {"dim": 300, "sha256": digests[0].sha256}}}}


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 100])
def test_cap_cuts_on_character_boundary(limit: int) -> None:
    text, cut = digest.cap("héllo wörld", limit)
    assert len(text.encode()) <= limit
    assert cut == (len("héllo wörld".encode()) > limit)
    assert "héllo wörld".startswith(text)


def test_digest_body_json_and_text() -> None:
    vec = [1.0] * 8
    content = json.dumps({"embeddings": [vec], "documents": ["x"], "metadatas": [{}]}).encode()
    d = digest.digest_body(content, location="response", limit=10_000, visible_fields=("documents",))
    assert d.text is not None and "metadatas" not in d.text and "$vector" not in d.text  # embeddings not visible
    d2 = digest.digest_body(content, location="response", limit=10_000)
    assert d2.text is not None and "$vector" in d2.text and len(d2.vectors) == 1
    d3 = digest.digest_body(b"plain text body", location="request", limit=5, mask=str.upper)
    assert d3 == digest.BodyDigest("PLAIN", (), True)
    assert digest.digest_body(b"", location="request", limit=5) == digest.BodyDigest(None, (), False)


def test_rerank_views_keep_parameters_not_documents_or_results() -> None:
    req = {"model": "m", "query": "q", "documents": ["a", "b"], "top_n": 1}
    assert digest.rerank_request_view(req) == {"model": "m", "query": "q", "documents": {"$documents": 2}, "top_n": 1}
    assert digest.rerank_request_view({"query": "q", "texts": ["a"]})["texts"] == {"$documents": 1}
    resp = {"id": "x", "results": [{"index": 0, "relevance_score": 1.0, "document": {"text": "a"}}], "meta": {"v": 2}}
    assert digest.rerank_response_view(resp) == {"id": "x", "results": {"$results": 1}, "meta": {"v": 2}}
    assert digest.rerank_response_view([{"index": 0, "score": 1.0, "text": "a"}]) == {"$results": 1}
    assert digest.rerank_response_view({"data": [], "model": "v"}) == {"data": {"$results": 0}, "model": "v"}
    assert digest.rerank_response_view("x") == "x"


def test_base64_vectors_are_digested_like_float_lists() -> None:
    """chromadb 1.x sends embeddings as base64 of float32: never recorded as they came."""
    import base64
    import struct

    vec = [0.125, 0.5, 0.25, 1.0]
    b64 = base64.b64encode(struct.pack("<4f", *vec)).decode()
    out, digests = digest.redact_vectors({"embeddings": [b64], "documents": ["d"]}, "request")
    floats, float_digests = digest.redact_vectors({"embeddings": [vec]}, "request")
    assert out["embeddings"] == floats["embeddings"]  # the same vector, the same digest
    assert digests[0].dim == 4 and digests[0].sha256 == float_digests[0].sha256
    junk, _ = digest.redact_vectors({"embeddings": ["not a vector!"]}, "request")
    assert "not a vector" not in json.dumps(junk)


@pytest.mark.parametrize(
    "body",
    [
        b'{"query_embeddings": [[0.5859375, 0.41015625, 4155550132]], "n_results": 3}',
        b'{"ids": ["a"], "embeddings": ["AAAAPgAAAD4=", null], "documents": ["x]"]}',
        b'[{"embedding": [1, 2e-3]}, {"embedding": [3]}]',
    ],
)
def test_blank_vectors_keeps_offsets_and_json_and_blanks_only_vectors(body: bytes) -> None:
    blank = digest.blank_vectors(body)
    assert len(blank) == len(body)
    value = json.loads(blank)
    assert b"4155550132" not in blank and b"AAAAPg" not in blank and b"2e-3" not in blank
    assert json.dumps(value).count("[]") >= 1


def test_blank_vectors_leaves_text_alone() -> None:
    body = b'{"embeddings": ["call 4155550132 now"], "documents": ["4155550132"]}'
    assert digest.blank_vectors(body) == body
    assert digest.blank_vectors(b'{"documents": ["embedding 4155550132"]}').count(b"4155550132") == 1
