"""An HTTPS rerank upstream on loopback, one per rerank dialect, for tests, `jitgate dev` and benchmarks.

Each instance speaks one dialect's routes and answer shapes, the ones its vendor's own client
expects (Cohere v1 and v2, Jina, Voyage, TEI), with real lexical BM25 scores; it checks an API key
and records what it received (and each TLS handshake's server name) so tests can assert that the
real key arrived and the JIT token did not. TLS comes from a private CA (trustme), which instances
may share; TCP_NODELAY is set so small responses are not delayed by Nagle. Vector stores are not
played here: tests, `jitgate dev` and the demo run the real Chroma server (jitgate.devstack.chroma).
"""

from __future__ import annotations

import collections
import functools
import hmac
import json
import math
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import trustme

_WORD = re.compile(r"\w+")
RerankDialect = Literal["cohere", "jina", "voyage", "tei"]
DIALECTS: tuple[RerankDialect, ...] = ("cohere", "jina", "voyage", "tei")
# The routes each vendor serves its rerank on (Cohere: v1 and v2; TEI: /rerank with `texts`).
ROUTES: dict[RerankDialect, frozenset[str]] = {
    "cohere": frozenset({"/v1/rerank", "/v2/rerank"}),
    "jina": frozenset({"/v1/rerank"}),
    "voyage": frozenset({"/v1/rerank"}),
    "tei": frozenset({"/rerank"}),
}


@dataclass(frozen=True)
class Received:
    """One request as the upstream saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@functools.lru_cache(maxsize=8192)
def _tokens(text: str) -> list[str]:
    # Cached: load tests send the same documents again and again; the upstream should not be the bottleneck.
    return _WORD.findall(text.lower())


def bm25(query: str, documents: Sequence[str], *, k1: float = 1.5, b: float = 0.75) -> list[float]:
    """Okapi BM25 of `query` against each document, IDF taken over `documents` themselves."""
    docs = [_tokens(d) for d in documents]
    n = len(docs)
    if n == 0:
        return []
    avgdl = sum(len(d) for d in docs) / n or 1.0
    scores = [0.0] * n
    # Only the query's terms matter: count them per document (list.count runs in C).
    for t in set(_tokens(query)):
        tf = [d.count(t) for d in docs]
        df = sum(1 for f in tf if f)
        if not df:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for i, f in enumerate(tf):
            if f:
                scores[i] += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * len(docs[i]) / avgdl))
    return scores


def _doc_text(doc: Any) -> str:
    if isinstance(doc, str):
        return doc
    if isinstance(doc, dict):
        return str(doc.get("text", ""))
    return ""


class Upstream:
    """The server. `start()` binds 127.0.0.1 on a free port; `url` is its base URL."""

    def __init__(
        self,
        *,
        api_keys: Iterable[str],
        ca: trustme.CA | None = None,
        dialect: RerankDialect = "cohere",
        record: bool = True,
        max_records: int = 10_000,
    ) -> None:
        self.ca = ca or trustme.CA()
        self._keys = [k.encode() for k in api_keys]
        self.dialect = dialect
        self.record = record
        self.received: collections.deque[Received] = collections.deque(maxlen=max_records)
        self.delay = 0.0  # seconds each answer waits (a slow upstream: flows stay in flight)
        self.connections = 0  # TCP connections accepted: a test can tell that nothing was relayed at all
        # The TLS server name (SNI) of each handshake, None when the client sent none: a test can
        # tell which name a front routing by SNI would have picked the backend by.
        self.server_names: collections.deque[str | None] = collections.deque(maxlen=max_records)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Upstream:
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        ctx.sni_callback = self._saw_server_name
        upstream = self

        class _Handler(_RequestHandler):
            owner = upstream

        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="jitgate-upstream", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Upstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "upstream is not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _saw_server_name(self, _sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        with self._lock:
            self.server_names.append(name)

    def ca_pem(self) -> bytes:
        return self.ca.cert_pem.bytes()

    def set_api_keys(self, keys: Iterable[str]) -> None:
        """Rotate: from now on only `keys` are accepted."""
        with self._lock:
            self._keys = [k.encode() for k in keys]

    # -- request handling (called from handler threads) --------------------------------------

    def authorized(self, headers: dict[str, str]) -> bool:
        presented = []
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            presented.append(auth[7:].strip())
        if "x-api-key" in headers:
            presented.append(headers["x-api-key"].strip())
        with self._lock:
            keys = list(self._keys)
        ok = False
        for p in presented:
            for k in keys:
                # Compare every pair so timing does not depend on which one matched.
                ok |= hmac.compare_digest(p.encode(), k)
        return ok

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        if self.record:
            self.received.append(Received(method, path, headers, body))
        if not self.authorized(headers):
            return 401, {"message": "invalid api token"}
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            return 400, {"message": "body is not JSON"}
        if not isinstance(payload, dict):
            return 400, {"message": "body must be a JSON object"}
        route = path.split("?", 1)[0]
        if method == "POST" and route in ROUTES[self.dialect]:
            return self._rerank(route, payload)
        return 404, {"message": f"no route {method} {route}"}

    def _rerank(self, route: str, payload: dict[str, Any]) -> tuple[int, Any]:
        query = payload.get("query")
        raw_docs = payload.get("texts") if route == "/rerank" else payload.get("documents")
        if not isinstance(query, str) or not isinstance(raw_docs, list):
            return 400, {"message": "query and documents are required"}
        docs = [_doc_text(d) for d in raw_docs]
        scores = bm25(query, docs)
        order = sorted(range(len(docs)), key=lambda i: (-scores[i], i))
        top = payload.get("top_n", payload.get("top_k"))
        if isinstance(top, int) and top > 0:
            order = order[:top]
        rid = str(uuid.uuid4())
        if route == "/rerank":  # TEI
            return 200, [{"index": i, "score": scores[i]} for i in order]
        results: list[dict[str, Any]]
        if route == "/v2/rerank":
            results = [{"index": i, "relevance_score": scores[i]} for i in order]
            return 200, {"id": rid, "results": results, "meta": {"api_version": {"version": "2"}}}
        if self.dialect == "voyage":
            data = [{"index": i, "relevance_score": scores[i]} for i in order]
            return 200, {"object": "list", "data": data, "model": payload.get("model"), "usage": {"total_tokens": 0}}
        if self.dialect == "jina":
            results = [{"index": i, "relevance_score": scores[i], "document": {"text": docs[i]}} for i in order]
            return 200, {"model": payload.get("model"), "results": results, "usage": {"total_tokens": 0}}
        results = [{"index": i, "relevance_score": scores[i]} for i in order]
        if payload.get("return_documents") is True:  # Cohere v1 echoes the documents on request
            for result in results:
                result["document"] = {"text": docs[result["index"]]}
        return 200, {"id": rid, "results": results, "meta": {"api_version": {"version": "1"}}}

class _RequestHandler(BaseHTTPRequestHandler):
    owner: Upstream
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.owner._lock:
            self.owner.connections += 1

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        if self.owner.delay:
            time.sleep(self.owner.delay)
        status, payload = self.owner.handle(self.command, self.path, headers, body)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = _serve
    do_GET = _serve
    do_DELETE = _serve
    do_PUT = _serve


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until killed; print the base URL first. Keys come from JITGATE_UPSTREAM_KEYS (comma-separated)."""
    import argparse
    import os

    parser = argparse.ArgumentParser(description="HTTPS rerank upstream with a private CA, on loopback.")
    parser.add_argument("--ca-out", required=True, help="where to write the private CA certificate (PEM)")
    parser.add_argument("--dialect", choices=DIALECTS, default="cohere", help="the rerank dialect it speaks")
    parser.add_argument("--no-record", action="store_true", help="do not keep received requests (load tests)")
    args = parser.parse_args(argv)
    keys = [k for k in os.environ.get("JITGATE_UPSTREAM_KEYS", "").split(",") if k]
    if not keys:
        parser.error("set JITGATE_UPSTREAM_KEYS")
    up = Upstream(api_keys=keys, dialect=args.dialect, record=not args.no_record).start()
    with open(args.ca_out, "wb") as out:
        out.write(up.ca_pem())
    print(up.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        up.stop()


if __name__ == "__main__":
    main()
