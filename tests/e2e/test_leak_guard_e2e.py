"""leak_guard in a real mitmdump: secrets split across chunks, compressed bodies, blocked requests.

mitmdump runs only `addon/leak_guard.py` (plus the policy it reads) in front of a tiny loopback
upstream that answers chunked, gzip, brotli and event-stream bodies with values planted at
run time, and records what it received. The client is httpx through the proxy.
"""

from __future__ import annotations

import collections
import gzip
import json
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import brotli
import httpx
import pytest

from tests.inspect import corpus

REPO = Path(__file__).resolve().parents[2]
MITMDUMP = Path(sys.executable).with_name("mitmdump")
RNG = random.Random()
SECRET = corpus.PREFIXED["github_pat"](RNG)
SECRET2 = corpus.PREFIXED["anthropic_api_key"](RNG)
EMAIL = corpus._email(RNG)


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    received: collections.deque[tuple[str, dict[str, str], bytes]] = collections.deque(maxlen=50)

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.received.append((self.path, dict(self.headers.items()), body))
        kind = self.path.rsplit("/", 1)[-1]
        doc = json.dumps({"results": [{"index": 0, "document": {"text": f"key {SECRET} mail {EMAIL}"}}]}).encode()
        if kind == "chunked":
            cut = doc.index(SECRET.encode()) + 9
            self._chunked("application/json", [doc[:cut], doc[cut:]])
        elif kind == "sse":
            event = f"data: {json.dumps({'text': 'answer ' + SECRET2})}\n\n".encode()
            cut = event.index(SECRET2.encode()) + 30
            self._chunked("text/event-stream", [b"data: start\n\n", event[:cut], event[cut:], b"data: [DONE]\n\n"])
        elif kind in ("gzip", "br"):
            packed = gzip.compress(doc) if kind == "gzip" else brotli.compress(doc)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-encoding", kind)
            self.send_header("content-length", str(len(packed)))
            self.end_headers()
            self.wfile.write(packed)
        else:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    def _chunked(self, ctype: str, parts: list[bytes]) -> None:
        self.send_response(200)
        self.send_header("content-type", ctype)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for part in parts:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.flush()
            time.sleep(0.05)  # separate TCP segments: the gateway sees separate chunks
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def proxy(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("leak_guard")
    policy = work / "policy.yaml"
    policy.write_text(
        "version: 1\nissuers: [{issuer: 'https://oidc.test', audience: jitgate}]\n"
        f"connections:\n  local:\n    dialect: cohere\n    upstream: {upstream}\n    credential: {{secret_id: x}}\n"
    )
    argv = [
        str(MITMDUMP), "--listen-host", "127.0.0.1", "--listen-port", "0", "--set", f"confdir={work}",
        "--set", "connection_strategy=lazy", "--set", "flow_detail=0", "-s", str(REPO / "addon" / "leak_guard.py"),
        "--set", f"jitgate_policy={policy}", "--set", "jitgate_stream_window=1024",
        "--set", "jitgate_max_inspect_bytes=65536",
    ]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    log: list[str] = []
    port = None
    while port is None:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("mitmdump exited:\n" + "".join(log))
        log.append(line)
        if "proxy listening at" in line:
            port = int(line.rsplit(":", 1)[1].strip().rstrip("."))
    threading.Thread(target=lambda: [log.append(x) for x in proc.stdout or []], daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:  # the script loads after the listener: wait until a request passes the addon
        try:
            if httpx.post(upstream + "/v2/rerank", json={}, proxy=url, timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("mitmdump not ready:\n" + "".join(log))
        time.sleep(0.2)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("kind", ["chunked", "gzip", "br"])
def test_response_secret_masked(proxy: str, upstream: str, kind: str) -> None:
    r = httpx.post(f"{upstream}/v2/rerank/{kind}", json={"query": "q", "documents": ["a"]}, proxy=proxy, timeout=10)
    assert r.status_code == 200, r.text
    assert SECRET not in r.text and EMAIL not in r.text, (r.headers, r.content)
    text = r.json()["results"][0]["document"]["text"]
    assert text.startswith("key [REDACTED:github_pat:") and "mail [REDACTED:email:" in text


def test_event_stream_secret_split_across_chunks_is_masked(proxy: str, upstream: str) -> None:
    with httpx.stream("POST", f"{upstream}/v2/rerank/sse", json={}, proxy=proxy, timeout=10) as r:
        body = b"".join(r.iter_raw())
    assert SECRET2.encode() not in body
    assert b"answer [REDACTED:anthropic_api_key:" in body and body.endswith(b"data: [DONE]\n\n")


def test_compressed_request_with_secret_is_blocked_and_never_forwarded(proxy: str, upstream: str) -> None:
    before = len(_Upstream.received)
    payload = gzip.compress(json.dumps({"query": "q", "documents": [f"token {SECRET}"]}).encode())
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    r = httpx.post(f"{upstream}/v2/rerank", content=payload, headers=headers, proxy=proxy, timeout=10)
    assert r.status_code == 403 and r.json()["code"] == "leak_blocked"
    assert r.json()["findings"][0]["type"] == "github_pat" and SECRET not in r.text
    assert len(_Upstream.received) == before


def test_compressed_request_with_pii_reaches_upstream_masked(proxy: str, upstream: str) -> None:
    payload = gzip.compress(json.dumps({"query": "q", "documents": [f"write {EMAIL}", "b"]}).encode())
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    r = httpx.post(f"{upstream}/v2/rerank/plain", content=payload, headers=headers, proxy=proxy, timeout=10)
    assert r.status_code == 200
    _path, got_headers, got = _Upstream.received[-1]
    assert got_headers.get("Content-Encoding", got_headers.get("content-encoding")) == "gzip"
    sent = json.loads(gzip.decompress(got))
    assert sent["documents"][0].startswith("write [REDACTED:email:") and sent["documents"][1] == "b"


def test_oversize_request_refused_with_413(proxy: str, upstream: str) -> None:
    r = httpx.post(f"{upstream}/v2/rerank", content=b"x" * 70_000, proxy=proxy, timeout=10)
    assert r.status_code == 413
