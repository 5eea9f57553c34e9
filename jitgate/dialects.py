"""API dialects: the named operations each kind of upstream exposes, as method + path patterns.

A path pattern is literal text with `{name}` placeholders matching one path segment; the
placeholder `{collection}` names the store collection the request touches. A connection in
the policy starts from its dialect's operations and may add or override its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from jitgate.chroma import ROUTES as CHROMA_ROUTES
from jitgate.routes import Route

DIALECTS = ("cohere", "jina", "voyage", "tei", "chroma", "generic", "postgres")
RERANK_DIALECTS = frozenset({"cohere", "jina", "voyage", "tei"})
# A Postgres connection has no routes: its operations are SQL's (jitgate/pgsql.py reads them).
SQL_OPERATIONS = ("select", "insert", "update", "delete")
# Headers in which any dialect's client may send its own credential (or the JIT token): the gateway
# never forwards them (credential_inject), and they are not scanned as data (leak_guard).
CLIENT_CREDENTIAL_HEADERS = ("Authorization", "Proxy-Authorization", "X-Api-Key", "Api-Key", "X-Chroma-Token")

# The body a dialect's SDK reads its error message from, for the gateway's own refusals (issue 25,
# item 6): voyageai and Jina's API read `detail` (voyageai calls any 4xx body without it "Invalid
# response object from API"), TEI and huggingface_hub read `error` and `error_type`, cohere's SDK
# shows the body with its `message`. Every shape keeps jitgate's `code` and `message` beside them.
_ERROR_FIELDS: dict[str, Callable[[str, str], dict[str, str]]] = {
    "voyage": lambda code, message: {"detail": message},
    "jina": lambda code, message: {"detail": message},
    "tei": lambda code, message: {"error": message, "error_type": code},
}


def error_body(dialect: str | None, code: str, message: str) -> dict[str, str]:
    """jitgate's `{code, message}`, plus what `dialect`'s SDK reads the message from."""
    extra = _ERROR_FIELDS.get(dialect or "")
    return {"code": code, "message": message, **(extra(code, message) if extra else {})}


def _routes(operation: str, method: str, *paths: str) -> list[Route]:
    return [Route(operation, method, p) for p in paths]


_CHROMA_V1 = "/api/v1/collections/{collection}"

DEFAULT_ROUTES: dict[str, tuple[Route, ...]] = {
    "cohere": tuple(_routes("rerank", "POST", "/v1/rerank", "/v2/rerank")),
    "jina": tuple(_routes("rerank", "POST", "/v1/rerank")),
    "voyage": tuple(_routes("rerank", "POST", "/v1/rerank")),
    "tei": tuple(_routes("rerank", "POST", "/rerank")),
    # Chroma 1.x's v2 API (jitgate/chroma.py). The v1 name-in-path routes match no Chroma release
    # (1.x answers v1 with 410); only the addon and hostile tests' refusal and framing paths use them.
    "chroma": CHROMA_ROUTES
    + tuple(
        _routes("query", "POST", f"{_CHROMA_V1}/query")
        + _routes("get", "POST", f"{_CHROMA_V1}/get")
        + _routes("add", "POST", f"{_CHROMA_V1}/add")
        + _routes("upsert", "POST", f"{_CHROMA_V1}/upsert")
        + _routes("delete", "POST", f"{_CHROMA_V1}/delete")
        + _routes("drop_collection", "DELETE", _CHROMA_V1)
    ),
    "generic": (),
    "postgres": (),
}


@dataclass(frozen=True)
class RouteMatch:
    operation: str
    collection: str | None


def match_route(routes: tuple[Route, ...], method: str, path: str) -> RouteMatch | None:
    """The first route matching method + path, with the collection it names, if any."""
    for route in routes:
        params = route.match(method, path)
        if params is not None:
            return RouteMatch(route.operation, params.get("collection"))
    return None
