"""API dialects: the named operations each kind of upstream exposes, as method + path patterns.

A path pattern is literal text with `{name}` placeholders matching one path segment; the
placeholder `{collection}` names the store collection the request touches. A connection in
the policy starts from its dialect's operations and may add or override its own.
"""

from __future__ import annotations

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
