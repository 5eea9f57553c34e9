"""Chroma's v2 API as the real client (chromadb 1.x) uses it: routes, collection names, answers.

Pure: the HTTP chain (addon/scope_guard.py) calls these with values read from its flow.

- `ROUTES` maps every call of `chromadb.HttpClient` to a named operation. Service calls
  (identity, heartbeat, version, pre-flight checks, tenant and database lookups) and the lookup of
  a granted collection (`get_collection`) need no operation of their own: any token of the
  connection may make them, within its tenant and database.
- Record calls name the collection by its **id** (a UUID) in the path; the scope names
  collections. `CollectionNames` resolves ids from the collection objects the store answered
  (create, get, list, modify), per connection, for a bounded time; an id it does not hold is
  looked up at the store (`lookup_path`) by the adapter, and one that still cannot be resolved is
  refused (`CollectionUnresolved`), never passed.
- `scope_error` checks tenant, database and every collection name a request touches (create
  and rename by the names in their bodies); `list_collections` answers are cut to the granted
  collections (`visible_collections`); `filter_fields` is the one field filter of record answers
  (get, query), for the client and for the record alike.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from jitgate.errors import (
    BadRequest,
    CollectionNotAllowed,
    CollectionUnresolved,
    DatabaseNotAllowed,
    FieldNotAllowed,
    JitgateError,
    OperationNotAllowed,
)
from jitgate.routes import Route
from jitgate.token import Scope

DEFAULT_TENANT = "default_tenant"
DEFAULT_DATABASE = "default_database"

_API = "/api/v2"
_TENANT = f"{_API}/tenants/{{tenant}}"
_DATABASE = f"{_TENANT}/databases/{{database}}"
_COLLECTIONS = f"{_DATABASE}/collections"
_BY_ID = f"{_COLLECTIONS}/{{collection_id}}"

ROUTES: tuple[Route, ...] = (
    Route("identity", "GET", f"{_API}/auth/identity"),
    Route("heartbeat", "GET", f"{_API}/heartbeat"),
    Route("version", "GET", f"{_API}/version"),
    Route("pre_flight_checks", "GET", f"{_API}/pre-flight-checks"),
    Route("get_tenant", "GET", _TENANT),
    Route("get_database", "GET", _DATABASE),
    Route("list_collections", "GET", _COLLECTIONS),
    Route("count_collections", "GET", f"{_DATABASE}/collections_count"),
    Route("create_collection", "POST", _COLLECTIONS),
    Route("get_collection", "GET", f"{_COLLECTIONS}/by-id/{{collection_id}}"),
    Route("get_collection", "GET", f"{_COLLECTIONS}/{{collection}}"),  # by name
    Route("modify_collection", "PUT", _BY_ID),
    Route("drop_collection", "DELETE", f"{_COLLECTIONS}/{{collection}}"),  # by name
    Route("add", "POST", f"{_BY_ID}/add"),
    Route("upsert", "POST", f"{_BY_ID}/upsert"),
    Route("update", "POST", f"{_BY_ID}/update"),
    Route("get", "POST", f"{_BY_ID}/get"),
    Route("query", "POST", f"{_BY_ID}/query"),
    Route("delete", "POST", f"{_BY_ID}/delete"),
    Route("count", "GET", f"{_BY_ID}/count"),
)
# Calls every token of a Chroma connection may make (within its tenant and database): the client's
# constructor and batching make them, and they tell nothing about any collection.
SERVICE_OPERATIONS = frozenset({"identity", "heartbeat", "version", "pre_flight_checks", "get_tenant", "get_database"})
# Granted with any operation: the client looks a collection up before any record call on it.
IMPLIED_OPERATIONS = SERVICE_OPERATIONS | {"get_collection"}
RECORD_ANSWERS = frozenset({"get", "query"})  # the answers `fields` applies to
# Named result fields of a record answer; a token's scope.fields picks among them, and
# `metadatas.KEY` grants one metadata key (the "columns" of a Chroma record).
STORE_FIELDS = frozenset({"ids", "embeddings", "documents", "uris", "data", "metadatas", "distances"})
# Where an answer lists the fields it holds: Chroma 1.x says `include`, older servers `included`.
_INCLUDE_KEYS = ("include", "included")

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
NAMES_TTL = 300.0  # seconds an id -> name mapping is trusted (another gateway may rename it)
_MAX_NAMES = 10_000


@dataclass(frozen=True)
class ChromaRequest:
    """What one Chroma call touches: operation, tenant, database and collection (name and/or id)."""

    operation: str
    tenant: str | None = None
    database: str | None = None
    collection: str | None = None  # the name, once known
    collection_id: str | None = None
    new_name: str | None = None  # create: the name in the body; modify: `new_name`


def parse_request(routes: tuple[Route, ...], method: str, path: str) -> ChromaRequest | None:
    """The first route matching method + path, as a ChromaRequest; None when no route matches."""
    for route in routes:
        params = route.match(method, path)
        if params is not None:
            return ChromaRequest(
                operation=route.operation,
                tenant=params.get("tenant"),
                database=params.get("database"),
                collection=params.get("collection"),
                collection_id=params.get("collection_id"),
            )
    return None


def with_body(req: ChromaRequest, body: Any) -> ChromaRequest | JitgateError:
    """`req` with the collection names its body gives (create: `name`; modify: `new_name`)."""
    if req.operation == "create_collection":
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            return BadRequest("create_collection needs a collection name in its body")
        return ChromaRequest(req.operation, req.tenant, req.database, name, None, name)
    if req.operation == "modify_collection" and isinstance(body, dict) and body.get("new_name") is not None:
        new_name = body["new_name"]
        if not isinstance(new_name, str):
            return BadRequest("new_name must be a string")
        return ChromaRequest(req.operation, req.tenant, req.database, req.collection, req.collection_id, new_name)
    return req


def valid_id(collection_id: str) -> bool:
    return _UUID.fullmatch(collection_id) is not None


def lookup_path(tenant: str, database: str, collection_id: str) -> str:
    """Where the store answers the collection object of an id (GET, with the injected credential)."""
    return f"{_API}/tenants/{tenant}/databases/{database}/collections/by-id/{collection_id}"


def _granted(scope: Scope, name: str) -> bool:
    return "*" in scope.collections or name in scope.collections


def scope_tenant(scope: Scope) -> tuple[str, str]:
    return scope.tenant or DEFAULT_TENANT, scope.database or DEFAULT_DATABASE


def database_error(scope: Scope, req: ChromaRequest) -> JitgateError | None:
    """Another tenant or database than the token's, or None."""
    tenant, database = scope_tenant(scope)
    if req.tenant is not None and req.tenant != tenant:
        return DatabaseNotAllowed(f"tenant {req.tenant!r} is not this token's")
    if req.database is not None and req.database != database:
        return DatabaseNotAllowed(f"database {req.database!r} is not this token's")
    return None


def scope_error(scope: Scope, req: ChromaRequest) -> JitgateError | None:
    """Check a Chroma call, its collection resolved to a name, against the token's scope."""
    if req.operation not in IMPLIED_OPERATIONS and req.operation not in scope.operations:
        return OperationNotAllowed(f"operation {req.operation!r} is not in this token's scope")
    err = database_error(scope, req)
    if err is not None:
        return err
    if req.operation == "count_collections" and "*" not in scope.collections:
        # The count covers every collection, granted or not: only a token granted all may ask.
        return CollectionNotAllowed("count_collections counts collections outside this token's scope")
    if req.collection_id is not None and req.collection is None:
        return CollectionUnresolved("the collection id could not be resolved to a name")
    for name in (req.collection, req.new_name):
        if name is not None and not _granted(scope, name):
            return CollectionNotAllowed(f"collection {name!r} is not in this token's scope")
    return None


class CollectionNames:
    """id -> name of the collections a store answered, per connection, tenant and database.

    Fed only by the store's own answers (collection objects carry `id`, `name`, `tenant`,
    `database`), so a client cannot plant a mapping. Entries expire after `ttl` seconds; the oldest
    go first past `max_entries`. The clock is passed in.
    """

    def __init__(self, *, ttl: float = NAMES_TTL, max_entries: int = _MAX_NAMES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._names: OrderedDict[tuple[str, str, str, str], tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._names)

    def name_of(self, conn: str, tenant: str, database: str, collection_id: str, *, now: float) -> str | None:
        key = (conn, tenant, database, collection_id.lower())
        hit = self._names.get(key)
        if hit is None:
            return None
        if now - hit[1] >= self.ttl:
            del self._names[key]
            return None
        return hit[0]

    def learn(self, conn: str, answer: Any, *, now: float, tenant: str, database: str) -> None:
        """Remember every collection object in `answer` (one, or a list as list_collections answers)."""
        for item in answer if isinstance(answer, list) else [answer]:
            if not isinstance(item, Mapping):
                continue
            cid, name = item.get("id"), item.get("name")
            if not (isinstance(cid, str) and isinstance(name, str) and valid_id(cid)):
                continue
            t, d = item.get("tenant", tenant), item.get("database", database)
            if not (isinstance(t, str) and isinstance(d, str)):
                continue
            key = (conn, t, d, cid.lower())
            self._names[key] = (name, now)
            self._names.move_to_end(key)
        while len(self._names) > self.max_entries:
            self._names.popitem(last=False)

    def forget(self, conn: str, tenant: str, database: str, *, name: str | None = None,
               collection_id: str | None = None) -> None:
        """Drop a collection's mapping (it was dropped or renamed)."""
        for key, (known, _) in list(self._names.items()):
            if key[:3] != (conn, tenant, database):
                continue
            if (name is not None and known == name) or (collection_id is not None and key[3] == collection_id.lower()):
                del self._names[key]


# Answers that carry collection objects to learn names from; calls after which an id's name is gone.
COLLECTION_ANSWERS = frozenset({"create_collection", "get_collection", "list_collections"})
FORGETTING = frozenset({"drop_collection", "modify_collection"})
BODY_NAMED = frozenset({"create_collection", "modify_collection"})  # their bodies name collections


def _where_keys(where: Any) -> set[str]:
    """Metadata keys a `where` filter reads (operators `$and`, `$or`, … are walked, not keys)."""
    keys: set[str] = set()
    if isinstance(where, Mapping):
        for k, v in where.items():
            if isinstance(k, str) and k.startswith("$"):
                for part in v if isinstance(v, list) else [v]:
                    keys |= _where_keys(part)
            else:
                keys.add(str(k))
    return keys


def filter_error(scope: Scope, operation: str, body: Any) -> JitgateError | None:
    """A get/query whose filters read what the token's fields hide: refused, or it is an oracle
    (`where: {owner_email: …}` answers whether a hidden value is what the caller guessed)."""
    if scope.fields is None or operation not in RECORD_ANSWERS or not isinstance(body, Mapping):
        return None
    keys = _metadata_keys(scope.fields)
    if keys is not None:  # metadata not granted whole
        hidden = sorted(k for k in _where_keys(body.get("where")) if k not in keys)
        if hidden:
            return FieldNotAllowed(f"the filter reads metadata keys this token may not see: {hidden}")
    if body.get("where_document") and "documents" not in scope.fields:
        return FieldNotAllowed("where_document reads documents, which this token may not see")
    return None


def answer_needs_cut(operation: str, scope: Scope) -> bool:
    """Whether an answer to `operation` must be cut to the token's scope before the client sees it."""
    if operation in RECORD_ANSWERS:
        return scope.fields is not None
    return operation == "list_collections" and "*" not in scope.collections


def cut_answer(operation: str, body: Any, scope: Scope) -> Any:
    """The answer the client may see: records cut to the granted fields, lists to granted collections."""
    if operation == "list_collections":
        return visible_collections(body, scope)
    if operation in RECORD_ANSWERS:
        return filter_fields(body, scope.fields)
    return body


def visible_collections(answer: Any, scope: Scope) -> Any:
    """A list_collections answer cut to the collections the token is granted."""
    if "*" in scope.collections or not isinstance(answer, list):
        return answer
    return [c for c in answer if isinstance(c, Mapping) and c.get("name") in scope.collections]


def _metadata_keys(fields: Collection[str]) -> frozenset[str] | None:
    """Metadata keys granted one by one (`metadatas.KEY`); None when `metadatas` is granted whole."""
    if "metadatas" in fields:
        return None
    return frozenset(f.split(".", 1)[1] for f in fields if f.startswith("metadatas."))


def _cut_metadata(value: Any, keys: frozenset[str]) -> Any:
    if isinstance(value, Mapping):
        return {k: v for k, v in value.items() if k in keys}
    if isinstance(value, list):
        return [_cut_metadata(v, keys) for v in value]
    return value  # None (no metadata) stays None


def filter_fields(body: Any, fields: Collection[str] | None) -> Any:
    """A record answer without the record fields the token may not see (None: all visible).

    One meaning everywhere (the client's answer, the session record): named record fields
    (`STORE_FIELDS`) not granted are dropped, `metadatas` keeps only granted keys when the grant
    names keys (`metadatas.source`), `include` is trimmed to what is left; any other key (an
    error's `error` and `message`) stays, so the filter is safe on every answer, 2xx or not.
    """
    if fields is None or not isinstance(body, dict):
        return body
    keys = _metadata_keys(fields)
    kept: dict[str, Any] = {}
    for k, v in body.items():
        if k == "metadatas" and keys is not None:
            if keys:
                kept[k] = _cut_metadata(v, keys)
        elif k not in STORE_FIELDS or k in fields:
            kept[k] = v
    for listed in _INCLUDE_KEYS:
        if isinstance(kept.get(listed), list):
            kept[listed] = [f for f in kept[listed] if f in kept]
    return kept
