"""Hostile bodies and headers against the real gateway with a valid token: each gets a clean
answer (JSON `{code, message}` where jitgate answers), nothing unchecked goes upstream, the gateway
stays up, and memory stays bounded (the gateway's peak RSS from /proc, before vs after)."""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.hostile.conftest import Hostile, tunnel
from tests.reliability.harness import DOCS, QUERY, client, peak_rss, rerank

MB = 1024 * 1024
NESTED_OBJECT = b'{"a":' * 100_000 + b"1" + b"}" * 100_000


@pytest.fixture
def c(hostile: Hostile, token: str) -> Iterator[httpx.Client]:  # through `hostile`, not conftest's `scripted`
    with client(hostile.gateway, hostile.bundle, token) as cl:
        yield cl


def _still_serves(h: Hostile, token: str) -> None:
    assert h.gateway.proc.poll() is None, "\n".join(h.gateway.log)
    with client(h.gateway, h.bundle, token) as cl:
        assert rerank(cl, h.upstream).status_code == 200


def _zeros(total: int, chunk: int = MB) -> Iterator[bytes]:
    block = b"0" * chunk
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        yield block[:n]
        sent += n


def _upload_reading_early(tls: ssl.SSLSocket, head: bytes, chunks: Iterator[bytes]) -> bytes:
    """Send `head` and the body while a reader thread takes whatever the gateway answers early."""
    answer = bytearray()
    done = threading.Event()

    def reader() -> None:
        try:
            while chunk := tls.recv(65536):
                answer.extend(chunk)
                if b"\r\n\r\n" in answer:
                    break
        except OSError:
            pass
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    try:
        tls.sendall(head)
        for chunk in chunks:
            if done.is_set():
                break
            tls.sendall(chunk)
    except OSError:
        pass  # the gateway closed on us after answering
    done.wait(30)
    return bytes(answer)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_100_mb_body_is_413_with_bounded_memory(hostile: Hostile, token: str, framing: str) -> None:
    pid = hostile.gateway.proc.pid
    base = peak_rss(pid)
    mark = len(hostile.upstream.received)
    host = f"127.0.0.1:{hostile.upstream.port}"
    head = f"POST /v2/rerank HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    if framing == "content-length":
        head += f"Content-Length: {100 * MB}\r\n\r\n"
        chunks = _zeros(100 * MB)
    else:
        head += "Transfer-Encoding: chunked\r\n\r\n"
        chunks = (f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in _zeros(100 * MB))
    tls = tunnel(hostile, token)
    try:
        answer = _upload_reading_early(tls, head.encode(), chunks)
    finally:
        tls.close()
    growth = peak_rss(pid) - base
    status = int(answer.split()[1]) if answer.startswith(b"HTTP/") else 0
    print(f"100 MB body ({framing}): status {status}, gateway peak RSS +{growth / MB:.1f} MB")
    # mitmproxy answers 413 and closes without reading the rest; a client still uploading may get
    # the reset before it reads the 413 (TCP discards it), so a reset counts as refused too.
    assert status in (413, 0), answer[:300]
    assert list(hostile.upstream.received)[mark:] == []
    assert growth < 40 * MB, f"peak RSS grew by {growth // MB} MB for a 100 MB body"
    _still_serves(hostile, token)


def test_gzip_bomb_is_refused_with_bounded_memory(hostile: Hostile, c: httpx.Client, token: str) -> None:
    bomb = gzip.compress(b"0" * (200 * MB), compresslevel=9)  # ~200 KB on the wire
    pid = hostile.gateway.proc.pid
    base = peak_rss(pid)
    mark = len(hostile.upstream.received)
    resp = c.post(
        f"{hostile.upstream.url}/v2/rerank",
        content=bomb,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip", "Authorization": "Bearer x"},
    )
    growth = peak_rss(pid) - base
    print(f"gzip bomb {len(bomb) // 1024} KB -> 200 MB: status {resp.status_code}, peak RSS +{growth / MB:.1f} MB")
    assert growth < 40 * MB, f"peak RSS grew by {growth // MB} MB for a {len(bomb) // 1024} KB gzip bomb"
    assert (resp.status_code, resp.json()["code"]) == (413, "payload_too_large"), resp.text[:300]
    assert list(hostile.upstream.received)[mark:] == []
    assert growth < 40 * MB, f"peak RSS grew by {growth // MB} MB for a {len(bomb) // 1024} KB gzip bomb"
    _still_serves(hostile, token)


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("malformed", b'{"query": "q", "documents": ["a", }'),
        ("deeply-nested-array", b'{"query": "q", "documents": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"),
        ("deeply-nested-object", b'{"query": "q", "documents": ["a"], "x": ' + NESTED_OBJECT + b"}"),
        ("invalid-utf8", b'{"query": "\xff\xfe\xfd", "documents": ["\xc3\x28", "ok"]}'),
        ("not-an-object", b'["query", "documents"]'),
        ("documents-not-a-list", b'{"query": "q", "documents": "a"}'),
    ],
)
def test_bad_json_is_refused_cleanly(hostile: Hostile, c: httpx.Client, token: str, name: str, body: bytes) -> None:
    mark = len(hostile.upstream.received)
    resp = c.post(
        f"{hostile.upstream.url}/v2/rerank",
        content=body,
        headers={"Content-Type": "application/json", "Authorization": "Bearer placeholder"},
    )
    forwarded = list(hostile.upstream.received)[mark:]
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:300], len(forwarded))
    answer = resp.json()
    assert forwarded == [], (resp.status_code, resp.text[:300])
    expected = {"malformed": "body_invalid_json", "invalid-utf8": "body_not_utf8"}.get(
        name, "body_invalid_json" if name.startswith("deeply") else "bad_request"
    )
    assert set(answer) >= {"code", "message"} and answer["code"] == expected
    assert list(hostile.upstream.received)[mark:] == []
    _still_serves(hostile, token)


def _post_with(c: httpx.Client, h: Hostile, headers: dict[str, str]) -> int:
    body = {"model": "rerank-v3.5", "query": QUERY, "documents": DOCS}
    url = f"{h.upstream.url}/v2/rerank"
    return c.post(url, json=body, headers={"Authorization": "Bearer x", **headers}).status_code


def test_huge_headers_are_refused_and_the_gateway_stays_up(hostile: Hostile, c: httpx.Client, token: str) -> None:
    mark = len(hostile.upstream.received)
    many = {f"X-Pad-{i}": "v" * 4000 for i in range(300)}  # 1.2 MB of headers
    try:
        status = _post_with(c, hostile, many)
    except httpx.HTTPError:
        status = 0  # the connection was closed on us: refused too
    one = {"X-Huge": "v" * (2 * MB)}
    try:
        status_one = _post_with(c, hostile, one)
    except httpx.HTTPError:
        status_one = 0
    assert status != 200 and status_one != 200, (status, status_one)
    forwarded = list(hostile.upstream.received)[mark:]
    assert all(len(json.dumps(r.headers)) < MB for r in forwarded)
    _still_serves(hostile, token)


@pytest.mark.parametrize("http2", [True, False], ids=["http2", "http1.1"])
def test_http2_and_http11_clients(hostile: Hostile, token: str, http2: bool) -> None:
    with client(hostile.gateway, hostile.bundle, token, http2=http2) as cl:
        ok = rerank(cl, hostile.upstream)
        assert ok.status_code == 200 and ok.json()["results"][0]["index"] == 1
        # With connection_strategy=lazy mitmproxy cannot know the upstream's ALPN before the client
        # handshake, so it offers the client HTTP/1.1 only: an h2-capable client falls back cleanly.
        assert ok.http_version == "HTTP/1.1"
    with client(hostile.gateway, hostile.bundle, None, http2=http2) as cl:
        refused = rerank(cl, hostile.upstream)
    assert (refused.status_code, refused.json()["code"]) == (407, "token_required")


def _slow_body(h: Hostile, token: str, results: list[int], pause: float, parts: int) -> None:
    """Through the proxy by hand: CONNECT, TLS, headers, then the body a few bytes at a time."""
    import base64

    body = json.dumps({"model": "rerank-v3.5", "query": QUERY, "documents": DOCS}).encode()
    auth = base64.b64encode(f"jit:{token}".encode()).decode()
    host = f"127.0.0.1:{h.upstream.port}"
    sock = socket.create_connection(("127.0.0.1", h.gateway.port), timeout=60)
    try:
        sock.sendall(f"CONNECT {host} HTTP/1.1\r\nHost: {host}\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert b" 200 " in head.split(b"\r\n", 1)[0]
        ctx = ssl.create_default_context(cafile=str(h.bundle))
        tls = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
        tls.sendall(
            f"POST /v2/rerank HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        step = max(1, len(body) // parts)
        for i in range(0, len(body), step):
            tls.sendall(body[i : i + step])
            time.sleep(pause)
        answer = b""
        while b"\r\n" not in answer:
            chunk = tls.recv(4096)
            if not chunk:
                break
            answer += chunk
        results.append(int(answer.split()[1]) if answer else 0)
    finally:
        sock.close()


def test_slowloris_bodies_do_not_stall_other_clients(hostile: Hostile, mint: Callable[..., dict[str, Any]]) -> None:
    # A token of its own: the fast client below sends as many requests as the slow bodies take, and
    # on a quick machine that used up the module token's max_requests (1,000) and got 429.
    token: str = mint("cohere-test")["token"]
    slow_results: list[int] = []
    slow = [
        threading.Thread(target=_slow_body, args=(hostile, token, slow_results, 0.2, 20)) for _ in range(8)
    ]
    for t in slow:
        t.start()
    time.sleep(0.5)
    fast: list[int] = []
    with client(hostile.gateway, hostile.bundle, token) as cl:
        while any(t.is_alive() for t in slow) and len(fast) < 500:  # within the token's max_requests
            fast.append(rerank(cl, hostile.upstream).status_code)
    for t in slow:
        t.join()
    assert fast and set(fast) == {200}  # served while eight bodies trickled in
    assert slow_results == [200] * 8  # and the slow ones were answered once complete
    _still_serves(hostile, token)

