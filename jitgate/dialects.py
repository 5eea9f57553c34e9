"""API dialects: the named operations each kind of upstream exposes, as method + path patterns.

A path pattern is literal text with `{name}` placeholders matching one path segment; the
placeholder `{collection}` names the store collection the request touches. A connection in
the policy starts from its dialect's operations and may add or override its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

DIALECTS = ("cohere", "jina", "voyage", "tei", "chroma", "generic")
RERANK_DIALECTS = frozenset({"cohere", "jina", "voyage", "tei"})
# Headers in which any dialect's client may send its own credential (or the JIT token): the gateway
# never forwards them (credential_inject), and they are not scanned as data (leak_guard).
CLIENT_CREDENTIAL_HEADERS = ("Authorization", "Proxy-Authorization", "X-Api-Key", "Api-Key", "X-Chroma-Token")

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Route:
    """One method + path pattern of a named operation."""

    operation: str
    method: str
    path: str

    @cached_property
    def regex(self) -> re.Pattern[str]:
        parts: list[str] = []
        last = 0
        for m in _PLACEHOLDER.finditer(self.path):
            parts.append(re.escape(self.path[last : m.start()]))
            parts.append(f"(?P<{m.group(1)}>[^/?#]+)")
            last = m.end()
        parts.append(re.escape(self.path[last:]))
        return re.compile("".join(parts) + r"/?")

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The placeholders of `path` if this route matches, else None."""
        if method != self.method:  # exact: methods are case-sensitive (RFC 9110 §9.1), `post` is no POST
            return None
        m = self.regex.fullmatch(path.split("?", 1)[0])
        return m.groupdict() if m else None


def _routes(operation: str, method: str, *paths: str) -> list[Route]:
    return [Route(operation, method, p) for p in paths]


_CHROMA_V1 = "/api/v1/collections/{collection}"
_CHROMA_V2 = "/api/v2/tenants/{tenant}/databases/{database}/collections/{collection}"

DEFAULT_ROUTES: dict[str, tuple[Route, ...]] = {
    "cohere": tuple(_routes("rerank", "POST", "/v1/rerank", "/v2/rerank")),
    "jina": tuple(_routes("rerank", "POST", "/v1/rerank")),
    "voyage": tuple(_routes("rerank", "POST", "/v1/rerank")),
    "tei": tuple(_routes("rerank", "POST", "/rerank")),
    "chroma": tuple(
        _routes("query", "POST", f"{_CHROMA_V1}/query", f"{_CHROMA_V2}/query")
        + _routes("get", "POST", f"{_CHROMA_V1}/get", f"{_CHROMA_V2}/get")
        + _routes("add", "POST", f"{_CHROMA_V1}/add", f"{_CHROMA_V2}/add")
        + _routes("upsert", "POST", f"{_CHROMA_V1}/upsert", f"{_CHROMA_V2}/upsert")
        + _routes("delete", "POST", f"{_CHROMA_V1}/delete", f"{_CHROMA_V2}/delete")
        + _routes("drop_collection", "DELETE", "/api/v1/collections/{collection}", _CHROMA_V2)
    ),
    "generic": (),
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
