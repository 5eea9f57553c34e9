"""jitgate/chroma.py: Chroma v2 routes, scope, id -> name resolution and answer filtering."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from jitgate import chroma, digest
from jitgate.dialects import DEFAULT_ROUTES
from jitgate.token import Scope

ROUTES = DEFAULT_ROUTES["chroma"]
T = "/api/v2/tenants/default_tenant/databases/default_database"
CID = str(uuid.uuid4())
READER = Scope(operations=("query", "get", "count"), collections=("candidates",), fields=("ids", "documents"))


@pytest.mark.parametrize(
    ("method", "path", "operation", "collection", "collection_id"),
    [
        ("GET", "/api/v2/auth/identity", "identity", None, None),
        ("GET", "/api/v2/heartbeat", "heartbeat", None, None),
        ("GET", "/api/v2/version", "version", None, None),
        ("GET", "/api/v2/pre-flight-checks", "pre_flight_checks", None, None),
        ("GET", "/api/v2/tenants/default_tenant", "get_tenant", None, None),
        ("GET", T, "get_database", None, None),
        ("GET", f"{T}/collections", "list_collections", None, None),
        ("GET", f"{T}/collections?limit=10&offset=0", "list_collections", None, None),
        ("GET", f"{T}/collections_count", "count_collections", None, None),
        ("POST", f"{T}/collections", "create_collection", None, None),
        ("GET", f"{T}/collections/candidates", "get_collection", "candidates", None),
        ("GET", f"{T}/collections/by-id/{CID}", "get_collection", None, CID),
        ("PUT", f"{T}/collections/{CID}", "modify_collection", None, CID),
        ("DELETE", f"{T}/collections/candidates", "drop_collection", "candidates", None),
        ("POST", f"{T}/collections/{CID}/add", "add", None, CID),
        ("POST", f"{T}/collections/{CID}/upsert", "upsert", None, CID),
        ("POST", f"{T}/collections/{CID}/update", "update", None, CID),
        ("POST", f"{T}/collections/{CID}/get", "get", None, CID),
        ("POST", f"{T}/collections/{CID}/query", "query", None, CID),
        ("POST", f"{T}/collections/{CID}/delete", "delete", None, CID),
        ("GET", f"{T}/collections/{CID}/count?read_level=index_and_wal", "count", None, CID),
    ],
)
def test_every_call_of_the_real_client_maps_to_an_operation(
    method: str, path: str, operation: str, collection: str | None, collection_id: str | None
) -> None:
    req = chroma.parse_request(ROUTES, method, path)
    assert req is not None
    assert (req.operation, req.collection, req.collection_id) == (operation, collection, collection_id)


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", f"{T}/collections/{CID}/search"), ("POST", "/api/v2/reset"), ("GET", f"{T}/collections/{CID}/fork"),
     ("post", f"{T}/collections/{CID}/get"), ("POST", "/api/v2/tenants")],
)
def test_calls_outside_the_map_match_no_operation(method: str, path: str) -> None:
    assert chroma.parse_request(ROUTES, method, path) is None


def _req(operation: str, **kw: Any) -> chroma.ChromaRequest:
    return chroma.ChromaRequest(operation, tenant=kw.pop("tenant", "default_tenant"),
                                database=kw.pop("database", "default_database"), **kw)


@pytest.mark.parametrize(
    ("scope", "req", "code"),
    [
        (READER, _req("identity", tenant=None, database=None), None),
        (READER, _req("get_database"), None),
        (READER, _req("get_collection", collection="candidates"), None),
        (READER, _req("get_collection", collection="secrets"), "collection_not_allowed"),
        (READER, _req("query", collection="candidates", collection_id=CID), None),
        (READER, _req("query", collection="secrets", collection_id=CID), "collection_not_allowed"),
        (READER, _req("query", collection_id=CID), "collection_unresolved"),
        (READER, _req("add", collection="candidates", collection_id=CID), "operation_not_allowed"),
        (READER, _req("query", collection="candidates", tenant="other_tenant"), "database_not_allowed"),
        (READER, _req("get_database", database="other_db"), "database_not_allowed"),
        (READER, _req("count_collections"), "operation_not_allowed"),
        (Scope(operations=("count_collections",), collections=("candidates",)), _req("count_collections"),
         "collection_not_allowed"),
        (Scope(operations=("count_collections",), collections=("*",)), _req("count_collections"), None),
        (Scope(operations=("create_collection",), collections=("candidates",)),
         _req("create_collection", collection="other", new_name="other"), "collection_not_allowed"),
        (Scope(operations=("modify_collection",), collections=("candidates",)),
         _req("modify_collection", collection="candidates", collection_id=CID, new_name="other"),
         "collection_not_allowed"),
        (Scope(operations=("query",), collections=("candidates",), tenant="acme", database="search"),
         _req("query", collection="candidates", collection_id=CID, tenant="acme", database="search"), None),
        (Scope(operations=("query",), collections=("candidates",), tenant="acme", database="search"),
         _req("query", collection="candidates", collection_id=CID), "database_not_allowed"),
    ],
)
def test_scope(scope: Scope, req: chroma.ChromaRequest, code: str | None) -> None:
    err = chroma.scope_error(scope, req)
    assert (err.code if err else None) == code


def test_create_and_rename_are_scoped_by_the_names_in_their_bodies() -> None:
    create = chroma.parse_request(ROUTES, "POST", f"{T}/collections")
    assert create is not None
    named = chroma.with_body(create, {"name": "other", "get_or_create": True})
    assert isinstance(named, chroma.ChromaRequest) and named.collection == "other"
    bad = chroma.with_body(create, {"get_or_create": True})
    assert not isinstance(bad, chroma.ChromaRequest) and bad.code == "bad_request"
    modify = chroma.ChromaRequest("modify_collection", collection="candidates", collection_id=CID)
    renamed = chroma.with_body(modify, {"new_name": "other", "new_metadata": None})
    assert isinstance(renamed, chroma.ChromaRequest) and renamed.new_name == "other"


def test_names_come_from_store_answers_per_connection_and_expire() -> None:
    names = chroma.CollectionNames(ttl=10)
    answer = [{"id": CID, "name": "candidates", "tenant": "default_tenant", "database": "default_database"},
              {"id": "not-a-uuid", "name": "x"}, "junk"]
    names.learn("chroma-dev", answer, now=100, tenant="default_tenant", database="default_database")
    assert names.name_of("chroma-dev", "default_tenant", "default_database", CID.upper(), now=105) == "candidates"
    assert names.name_of("other-conn", "default_tenant", "default_database", CID, now=105) is None
    assert names.name_of("chroma-dev", "other_tenant", "default_database", CID, now=105) is None
    assert names.name_of("chroma-dev", "default_tenant", "default_database", CID, now=110) is None  # expired
    assert len(names) == 0
    names.learn("chroma-dev", answer[0], now=200, tenant="t", database="d")
    names.forget("chroma-dev", "default_tenant", "default_database", name="candidates")
    assert names.name_of("chroma-dev", "default_tenant", "default_database", CID, now=201) is None


def test_names_are_bounded() -> None:
    names = chroma.CollectionNames(max_entries=3)
    for k in range(5):
        names.learn("c", {"id": str(uuid.uuid4()), "name": f"n{k}"}, now=0, tenant="t", database="d")
    assert len(names) == 3


def test_list_answers_keep_only_granted_collections() -> None:
    answer = [{"id": CID, "name": "candidates"}, {"id": str(uuid.uuid4()), "name": "secrets"}]
    assert chroma.cut_answer("list_collections", answer, READER) == [answer[0]]
    assert chroma.answer_needs_cut("list_collections", READER)
    assert not chroma.answer_needs_cut("list_collections", Scope(collections=("*",)))


def test_fields_apply_to_record_answers_only() -> None:
    identity = {"user_id": "", "tenant": "default_tenant", "databases": ["default_database"]}
    assert chroma.cut_answer("identity", identity, READER) == identity
    assert not chroma.answer_needs_cut("get_collection", READER)
    assert chroma.answer_needs_cut("query", READER) and chroma.answer_needs_cut("get", READER)


@pytest.mark.parametrize("listed", ["include", "included"])  # Chroma 1.x's name, and older servers'
def test_filter_fields_keeps_only_granted_columns(listed: str) -> None:
    body = {"ids": [["1"]], "documents": [["d"]], "embeddings": [[[0.1]]], listed: ["documents", "embeddings"]}
    assert chroma.filter_fields(body, ("ids", "documents")) == {"ids": [["1"]], "documents": [["d"]],
                                                                 listed: ["documents"]}
    assert chroma.filter_fields([1, 2], ("ids",)) == [1, 2]
    assert chroma.filter_fields(body, None) == body


def test_filter_fields_grants_metadata_keys_one_by_one() -> None:
    query = {"ids": [["1", "2"]], "metadatas": [[{"source": "wiki", "owner_email": "a@example.com"}, None]],
             "included": ["metadatas"]}
    got = chroma.filter_fields(query, ("ids", "metadatas.source"))
    assert got["metadatas"] == [[{"source": "wiki"}, None]] and got["included"] == ["metadatas"]
    get = {"ids": ["1"], "metadatas": [{"source": "wiki", "owner_email": "a@example.com"}]}
    assert chroma.filter_fields(get, ("ids", "metadatas.source"))["metadatas"] == [{"source": "wiki"}]
    assert "metadatas" not in chroma.filter_fields(get, ("ids",))


def test_filter_fields_keeps_an_error_answer_readable() -> None:
    error = {"error": "InvalidArgumentError", "message": "bad", "documents": ["leaked"]}
    assert chroma.filter_fields(error, ("ids",)) == {"error": "InvalidArgumentError", "message": "bad"}


def test_the_record_uses_the_same_filter() -> None:
    answer = {"ids": [["1"]], "documents": [["d"]], "metadatas": [[{"k": "v", "source": "s"}]],
              "included": ["documents", "metadatas"]}
    for fields in (("ids", "documents"), ("ids", "metadatas.source"), None):
        recorded = digest.digest_body(b"{}", location="response", limit=10_000, visible_fields=fields,
                                      parsed=answer)
        assert recorded.text == digest.json.dumps(chroma.filter_fields(answer, fields), separators=(",", ":"))


@pytest.mark.parametrize(
    ("fields", "body", "code"),
    [
        (("ids", "documents"), {"where": {"owner_email": "a@example.com"}}, "field_not_allowed"),
        (("ids", "documents"), {"where": {"$and": [{"source": "wiki"}, {"owner_email": {"$eq": "x"}}]}},
         "field_not_allowed"),
        (("ids", "metadatas.source"), {"where": {"source": "wiki"}}, None),
        (("ids", "metadatas.source"), {"where": {"$or": [{"source": "a"}, {"owner_email": "b"}]}},
         "field_not_allowed"),
        (("ids", "metadatas"), {"where": {"owner_email": "a@example.com"}}, None),
        (("ids", "distances"), {"where_document": {"$contains": "secret"}}, "field_not_allowed"),
        (("ids", "documents"), {"where_document": {"$contains": "capital"}}, None),
        (None, {"where": {"owner_email": "a@example.com"}}, None),
        (("ids",), {"where": None, "where_document": None}, None),
    ],
)
def test_filters_on_hidden_fields_are_refused(fields: tuple[str, ...] | None, body: Any, code: str | None) -> None:
    scope = Scope(operations=("query",), collections=("candidates",), fields=fields)
    err = chroma.filter_error(scope, "query", body)
    assert (err.code if err else None) == code
