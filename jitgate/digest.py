"""What of a payload goes into a session record: pure functions over already-masked bodies.

Rerank calls keep the query, the SHA-256 of every document as the upstream saw it and the
returned ranking. Bodies keep their shape but lose every embedding vector (replaced by its
dimension and a hash) and, for store answers, every named field the token could not see.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from jitgate import jsontext
from jitgate.records import RankEntry, VectorDigest, escape_surrogates

# Keys whose numeric lists are embedding vectors; any other all-number list this long is one too.
_VECTOR_KEYS = frozenset({"embedding", "embeddings", "query_embeddings", "vector", "vectors", "values"})
_LONG_NUMBER_LIST = 128
# Named result fields of a store answer (Chroma get/query); a token's scope.fields picks among them.
STORE_FIELDS = frozenset({"ids", "embeddings", "documents", "uris", "data", "metadatas", "distances"})
MAX_VECTOR_DIGESTS = 1024
MAX_DOC_HASHES = 10_000


# Copying a started hash is about half the cost of `hashlib.sha256()` per small input (OpenSSL 3
# looks the digest up at every construction); a record hashes every document of a rerank.
_SHA256 = hashlib.sha256()


def sha256_text(text: str) -> str:
    h = _SHA256.copy()
    h.update(text.encode("utf-8", "surrogatepass"))  # JSON may carry a lone surrogate
    return h.hexdigest()


def document_fingerprint(doc: Any) -> str:
    """SHA-256 of a document's text; a structured document without `text` hashes its canonical JSON."""
    if isinstance(doc, str):
        return sha256_text(doc)
    if isinstance(doc, dict) and isinstance(doc.get("text"), str):
        return sha256_text(doc["text"])
    return sha256_text(json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False))


def vector_digest(vector: list[Any], location: str) -> VectorDigest:
    text = json.dumps(vector, separators=(",", ":"))
    return VectorDigest(location=location, dim=len(vector), sha256=sha256_text(text))


@dataclass(frozen=True)
class RerankSummary:
    query: str | None = None
    doc_count: int | None = None
    doc_sha256: tuple[str, ...] = ()
    ranking: tuple[RankEntry, ...] = ()


def _documents(request: dict[str, Any]) -> list[Any] | None:
    for key in ("documents", "texts"):  # Cohere / Jina / Voyage, then TEI
        docs = request.get(key)
        if isinstance(docs, list):
            return docs
    return None


def _results(response: Any) -> list[Any]:
    if isinstance(response, list):  # TEI answers a bare list
        return response
    if isinstance(response, dict):
        for key in ("results", "data"):  # Cohere / Jina, then Voyage
            items = response.get(key)
            if isinstance(items, list):
                return items
    return []


def _score(item: dict[str, Any]) -> float | None:
    for key in ("relevance_score", "score"):
        value = item.get(key)
        if type(value) is float:  # the usual case, first
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def fingerprints(docs: list[Any]) -> tuple[str, ...]:
    """`document_fingerprint` of each document; text documents (the usual case) straight to the hash."""
    return tuple([sha256_text(doc) if type(doc) is str else document_fingerprint(doc) for doc in docs])


def summarize_rerank(request: Any, response: Any) -> RerankSummary:
    """Query, document fingerprints and ranking of a rerank call in any supported dialect."""
    if not isinstance(request, dict):
        return RerankSummary()
    query = request.get("query")
    docs = _documents(request)
    ranking: list[RankEntry] = []
    add = ranking.append
    for item in _results(response):
        if isinstance(item, dict):
            index = item.get("index")
            if type(index) is int:  # a JSON integer; never a bool
                score = item.get("relevance_score")
                add({"index": index, "score": score if type(score) is float else _score(item)})
    return RerankSummary(
        query=query if isinstance(query, str) else None,
        doc_count=len(docs) if docs is not None else None,
        doc_sha256=fingerprints((docs or [])[:MAX_DOC_HASHES]),
        ranking=tuple(ranking),  # types checked here: the record is not validated again
    )


def _is_number_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in value)
    )


@dataclass
class _Redactor:
    digests: list[VectorDigest] = field(default_factory=list)

    def walk(self, value: Any, location: str, in_vector_key: bool) -> Any:
        if _is_number_list(value) and (in_vector_key or len(value) >= _LONG_NUMBER_LIST):
            digest = vector_digest(value, location)
            if len(self.digests) < MAX_VECTOR_DIGESTS:
                self.digests.append(digest)
            return {"$vector": {"dim": digest.dim, "sha256": digest.sha256}}
        if isinstance(value, dict):
            return {k: self.walk(v, f"{location}.{k}", in_vector_key or k in _VECTOR_KEYS) for k, v in value.items()}
        if isinstance(value, list):
            return [self.walk(v, f"{location}[{i}]", in_vector_key) for i, v in enumerate(value)]
        return value


def redact_vectors(value: Any, location: str) -> tuple[Any, tuple[VectorDigest, ...]]:
    """`value` with every embedding vector replaced by `{"$vector": {dim, sha256}}`, and the digests."""
    redactor = _Redactor()
    out = redactor.walk(value, location, False)
    return out, tuple(redactor.digests)


def drop_unseen_fields(response: Any, visible: Collection[str] | None) -> Any:
    """A store answer without the named fields the token's scope could not see (None: all visible)."""
    if visible is None or not isinstance(response, dict):
        return response
    allowed = set(visible)
    return {k: v for k, v in response.items() if k not in STORE_FIELDS or k in allowed}


def parse_json(content: bytes | None) -> Any:
    """The JSON value of a body, or None when it is empty or not JSON: the gateway's one reading of
    JSON (`jitgate.jsontext`), lenient as for answers (a record describes what went through)."""
    if not content:
        return None
    value = jsontext.read(content, "application/json", strict=False).value
    return None if value is jsontext.NOT_JSON else value


def cap(text: str, limit: int) -> tuple[str, bool]:
    """`text` cut to `limit` UTF-8 bytes (on a character boundary) and whether it was cut; lone
    surrogates are kept as their escapes (`records.escape_surrogates`)."""
    text = escape_surrogates(text)
    if len(text) <= limit // 4 or (text.isascii() and len(text) <= limit):
        return text, False
    raw = text.encode()
    if len(raw) <= limit:
        return text, False
    return raw[:limit].decode(errors="ignore"), True


def rerank_request_view(request: Any) -> Any:
    """A rerank request without its documents: they are in the record as fingerprints."""
    if not isinstance(request, dict):
        return request
    return {
        k: ({"$documents": len(v)} if k in ("documents", "texts") and isinstance(v, list) else v)
        for k, v in request.items()
    }


def rerank_response_view(response: Any) -> Any:
    """A rerank answer without its results list: the record's `ranking` holds index and score."""
    if isinstance(response, list):
        return {"$results": len(response)}
    if isinstance(response, dict):
        for key in ("results", "data"):
            if isinstance(response.get(key), list):
                return {**response, key: {"$results": len(response[key])}}
    return response


@dataclass(frozen=True)
class BodyDigest:
    text: str | None
    vectors: tuple[VectorDigest, ...]
    truncated: bool


_UNPARSED: Any = object()


def digest_body(
    content: bytes | None,
    *,
    location: str,
    limit: int,
    visible_fields: Collection[str] | None = None,
    mask: Callable[[str], str] | None = None,
    parsed: Any = _UNPARSED,
) -> BodyDigest:
    """The recorded form of a (masked) body: vectors digested, unseen fields dropped, capped.

    `parsed` is the body's JSON value when the caller has parsed it already (None: not JSON).
    """
    if not content:
        return BodyDigest(None, (), False)
    value = parse_json(content) if parsed is _UNPARSED else parsed
    vectors: tuple[VectorDigest, ...] = ()
    if value is not None:
        value, vectors = redact_vectors(drop_unseen_fields(value, visible_fields), location)
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    else:
        text = content.decode(errors="replace")
    if mask is not None:
        text = mask(text)
    text, truncated = cap(text, limit)
    return BodyDigest(text, vectors, truncated)
