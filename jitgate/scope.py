"""What a verified token may do: the scope check of one request, and the limits' arithmetic.

Protocol-neutral and pure: the HTTP chain (addon/scope_guard.py, addon/approval_hold.py) calls
these with values read from its flow; a listener for another protocol calls them the same way.
A token's `conn` claim picks the connection; method and path map to one of its named operations;
operations, methods, paths and collections outside the token's scope are refused; `max_documents`
counts rerank documents (TEI `texts`) and store add/upsert `ids`; a store answer keeps only the
granted fields.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from jitgate.dialects import RERANK_DIALECTS, match_route
from jitgate.errors import CollectionNotAllowed, JitgateError, OperationNotAllowed, WrongConnection
from jitgate.policy import Connection
from jitgate.token import Claims

STORE_DIALECTS = frozenset({"chroma"})
_BATCH_OPERATIONS = frozenset({"add", "upsert"})


def scope_error(
    claims: Claims, conn: Connection, method: str, path: str
) -> tuple[JitgateError | None, str, str | None]:
    """Check one request against the token's scope: (error or None, operation, collection)."""
    if claims.conn != conn.name:
        return WrongConnection(f"this token is for connection {claims.conn!r}, not {conn.name!r}"), "", None
    route = match_route(conn.routes, method, path)
    if route is None:
        return OperationNotAllowed(f"{method} {path.split('?', 1)[0]} is no operation of {conn.name!r}"), "", None
    scope = claims.scope
    if route.operation not in scope.operations:
        return OperationNotAllowed(f"operation {route.operation!r} is not in this token's scope"), route.operation, None
    if scope.methods and method not in scope.methods:
        return OperationNotAllowed(f"method {method} is not in this token's scope"), route.operation, None
    bare = path.split("?", 1)[0]
    if scope.paths and not any(fnmatch.fnmatchcase(bare, p) for p in scope.paths):
        return OperationNotAllowed("this path is not in this token's scope"), route.operation, None
    if route.collection is not None and "*" not in scope.collections and route.collection not in scope.collections:
        msg = f"collection {route.collection!r} is not in this token's scope"
        return CollectionNotAllowed(msg), route.operation, route.collection
    return None, route.operation, route.collection


def document_count(dialect: str, operation: str, body: Any) -> int | None:
    """How many documents a call carries: rerank `documents` (TEI `texts`), store add/upsert `ids`."""
    if not isinstance(body, dict):
        return None
    if dialect in RERANK_DIALECTS and operation == "rerank":
        docs = body.get("texts" if dialect == "tei" else "documents")
    elif dialect in STORE_DIALECTS and operation in _BATCH_OPERATIONS:
        docs = body.get("ids")
    else:
        return 0
    return len(docs) if isinstance(docs, list) else None


def filter_fields(body: Any, fields: tuple[str, ...]) -> Any:
    """Keep only granted top-level fields of a store answer (plus `included`, trimmed to them)."""
    if not isinstance(body, dict):
        return body
    kept = {k: v for k, v in body.items() if k in fields}
    if isinstance(body.get("included"), list):
        kept["included"] = [f for f in body["included"] if f in fields]
    return kept


def lease_size(max_requests: int, lease: int) -> int:
    """Uses one gateway reserves at a time: at most `lease` and 2 % of the budget, at least 1."""
    return max(1, min(lease, max_requests // 50))
