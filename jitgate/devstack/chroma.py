"""A real Chroma server (`chroma run`, the Rust server shipped in the `chromadb` wheel) on loopback.

Tests, `jitgate dev`, the demo and the benchmarks run it instead of a stand-in: a stand-in agrees
with the code written beside it, the real server and its real client do not have to. Self-hosted
Chroma 1.x has no authentication of its own, so it listens on 127.0.0.1 only and the gateway is
its one path in use. `seed_candidates` fills the collection `candidates` with documents (some
holding e-mail addresses and phone numbers), metadata (`source`, `owner_email`) and embeddings of
dimension 8, through Chroma's own v2 API.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from jitgate.devstack.process import terminate

CHROMA = Path(sys.executable).with_name("chroma")
DIMENSION = 8
API = "/api/v2"
TENANT = "default_tenant"
DATABASE = "default_database"
COLLECTION = "candidates"

# (id, document, source, owner_email): some documents hold PII, as real candidate stores do.
SEED: tuple[tuple[str, str, str, str], ...] = (
    ("c1", "Washington, D.C. is the capital of the United States.", "wiki", "ana@example.com"),
    ("c2", "Carson City is the capital city of the American state of Nevada.", "wiki", "ana@example.com"),
    ("c3", "Contact the recruiter at jane.doe@example.com for the search role.", "crm", "bob@example.org"),
    ("c4", "Call the hiring desk on +1 415 555 0132 before Friday.", "crm", "bob@example.org"),
    ("c5", "The Northern Mariana Islands are a group of islands in the Pacific Ocean.", "wiki", "ana@example.com"),
    ("c6", "Capital punishment has existed in the United States since before it was a country.", "wiki",
     "cy@example.net"),
    ("c7", "Reranking orders candidate documents by their relevance to a query.", "docs", "cy@example.net"),
    ("c8", "Vector stores keep embeddings next to documents and metadata.", "docs", "cy@example.net"),
)


def embedding(text: str, dim: int = DIMENSION) -> list[float]:
    """A deterministic unit-free embedding of `text` (SHA-256 bytes scaled to [0, 1)), for seeding."""
    digest = hashlib.sha256(text.encode()).digest()
    return [digest[i] / 256.0 for i in range(dim)]


def base64_embedding(vector: list[float]) -> str:
    """A vector in the form chromadb 1.x sends: base64 of little-endian float32."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def collection_path(tenant: str = TENANT, database: str = DATABASE) -> str:
    return f"{API}/tenants/{tenant}/databases/{database}/collections"


class ChromaServer:
    """`chroma run --host 127.0.0.1 --port P --path DIR` as a child; `url` once it answers heartbeats."""

    def __init__(self, path: Path, *, port: int = 0) -> None:
        self.path = path
        self.port = port
        self._proc: subprocess.Popen[str] | None = None
        self.log: collections.deque[str] = collections.deque(maxlen=200)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 60.0) -> ChromaServer:
        if not CHROMA.exists():
            raise RuntimeError(f"{CHROMA} is missing: install chromadb (make setup does)")
        self.path.mkdir(parents=True, exist_ok=True)
        # A port taken between the probe and the bind fails the heartbeat below; one more try then.
        for attempt in range(2):
            port = self.port or _free_port()
            env = {**os.environ, "ANONYMIZED_TELEMETRY": "False", "NO_COLOR": "1"}
            argv = [str(CHROMA), "run", "--host", "127.0.0.1", "--port", str(port), "--path", str(self.path)]
            self._proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            threading.Thread(target=self._drain, daemon=True).start()
            self.port = port
            if self._wait(timeout):
                return self
            self.stop()
            if attempt or self.port != port:
                break
            self.port = 0
        said = " | ".join(list(self.log)[-5:])[:500]
        raise RuntimeError(f"chroma run did not start: {said!r}")

    def _drain(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        for line in proc.stdout:
            self.log.append(line.rstrip())

    def _wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                if httpx.get(f"{self.url}{API}/heartbeat", timeout=2).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        if self._proc is not None:
            terminate(self._proc)

    def __enter__(self) -> ChromaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def seed_candidates(url: str, *, name: str = COLLECTION, extra: int = 0) -> dict[str, Any]:
    """Create (or reuse) `name` and upsert the seed records, plus `extra` generated ones; its JSON."""
    with httpx.Client(base_url=url, timeout=30) as client:
        resp = client.post(collection_path(), json={"name": name, "get_or_create": True})
        resp.raise_for_status()
        col: dict[str, Any] = resp.json()
        rows = [(i, doc, {"source": src, "owner_email": owner}) for i, doc, src, owner in SEED]
        rows += [(f"g{k}", f"generated candidate number {k} about topic {k % 7}", {"source": "gen",
                  "owner_email": "gen@example.com"}) for k in range(extra)]
        for start in range(0, len(rows), 1000):
            batch = rows[start : start + 1000]
            body = {
                "ids": [r[0] for r in batch],
                "documents": [r[1] for r in batch],
                "metadatas": [r[2] for r in batch],
                "embeddings": [embedding(r[1]) for r in batch],
            }
            client.post(f"{collection_path()}/{col['id']}/upsert", json=body).raise_for_status()
        return col
