"""What an outside tester got through the gateway (issue 16), against a real gateway.

The upstream is scripted (`FaultyUpstream` in mode "script", tests/reliability/harness.py) so it
can answer what no well-behaved API would: chunked answers echoing the injected credential in a
header, UTF-16 JSON, text led by 80 spaces. Each test asserts the answer's stable code, what
reached the upstream (nothing, for a refused request) and that no secret is in any record.
"""

from __future__ import annotations

import json
import secrets
import socket
import ssl
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from jitgate.devstack.policy import READER_SUB
from tests.hostile.conftest import RERANK, Scripted, aws_key, escaped
from tests.reliability.harness import (
    Seen,
    client,
    http_answer,
)


def _sent_since(s: Scripted, mark: int) -> list[Seen]:
    return s.upstream.seen[mark:]


# -- 1. response headers of streamed answers ----------------------------------------------------


@pytest.mark.parametrize("framing", ["chunked", "event-stream", "content-length"])
def test_answer_headers_are_masked_whatever_the_framing(scripted: Scripted, c: httpx.Client, framing: str) -> None:
    key = aws_key()

    def answer(seen: Seen) -> bytes:
        headers = {
            "Content-Type": "text/event-stream" if framing == "event-stream" else "application/json",
            "X-Echo": seen.header("authorization") or "",
            "X-Leak": f"{key} x@example.org",
        }
        if framing == "content-length":
            return http_answer(200, headers, b'{"results": []}')
        return http_answer(200, headers, chunks=[b'{"results": ', b"[]}"])

    scripted.upstream.answer = answer
    mark = len(scripted.upstream.seen)
    resp = c.post(f"{scripted.upstream.url}/v2/rerank", json=RERANK)
    (seen,) = _sent_since(scripted, mark)
    injected = (seen.header("authorization") or "").removeprefix("Bearer ")
    assert len(injected) >= 16  # the real upstream key reached the upstream (and only it)
    shown = "\n".join(f"{k}: {v}" for k, v in resp.headers.items())
    assert resp.status_code == 200, resp.text
    assert injected not in shown and key not in shown and "x@example.org" not in shown
    assert "[REDACTED:" in resp.headers["x-leak"]
    assert injected.encode() not in scripted.record_bytes()


# -- 2. request bodies a JSON parser reads but the scanner did not ------------------------------


def _hidden(key: str) -> dict[str, tuple[bytes, str | None]]:
    doc = json.dumps({"query": "q", "documents": [key]})
    esc = ('{"query": "q", "documents": ["' + escaped(key) + '"]}').encode()
    return {
        "utf-16-bom": (doc.encode("utf-16"), "application/json"),
        "utf-16-le": (doc.encode("utf-16-le"), "application/json"),
        "utf-16-be": (doc.encode("utf-16-be"), "application/json"),
        "utf-32": (doc.encode("utf-32"), "application/json"),
        "utf-8-bom-text": (b"\xef\xbb\xbf" + esc, "text/plain"),
        "whitespace-80-text": (b" " * 80 + esc, "text/plain"),
        "whitespace-200-none": (b"\n" * 200 + esc, None),
        "top-level-string": (('"' + escaped(key) + '"').encode(), "text/plain"),
    }


@pytest.mark.parametrize("case", sorted(_hidden("x")))
def test_request_a_parser_reads_otherwise_is_refused(
    scripted: Scripted, c: httpx.Client, case: str, token: str
) -> None:
    key = aws_key()
    body, ctype = _hidden(key)[case]
    before = scripted.snapshot()
    mark = len(scripted.upstream.seen)
    headers = {"Content-Type": ctype} if ctype else {}
    req = c.build_request("POST", f"{scripted.upstream.url}/v2/rerank", content=body, headers=headers)
    if ctype is None:
        req.headers.pop("content-type", None)
    resp = c.send(req)
    # A top-level string holds no documents to count: scope_guard refuses it first (and leak_guard
    # still masks it for the record).
    expected = {"top-level-string": (400, "bad_request")}.get(
        case, (400, "body_not_utf8") if case.startswith("utf-") else (403, "leak_blocked")
    )
    assert (resp.status_code, resp.json()["code"]) == expected, resp.text
    assert _sent_since(scripted, mark) == []
    (record,) = scripted.new_records(before, 1)
    assert record["decision"] == "blocked" and record["request_body"] is None
    assert key.encode() not in scripted.record_bytes()


@pytest.mark.parametrize(
    "name,body",
    [
        ("duplicate-documents", b'{"query": "q", "documents": ["a"], "documents": [' + b'"d",' * 1500 + b'"d"]}'),
        ("duplicate-nested", b'{"query": "q", "documents": [{"text": "a", "text": "b"}]}'),
        ("nan", b'{"query": "q", "documents": ["a"], "top_n": NaN}'),
        ("infinity", b'{"query": "q", "documents": ["a"], "top_n": Infinity}'),
        ("overflow", b'{"query": "q", "documents": ["a"], "top_n": 1e99999}'),
    ],
)
def test_request_that_is_no_strict_json_is_refused(scripted: Scripted, c: httpx.Client, name: str, body: bytes) -> None:
    mark = len(scripted.upstream.seen)
    resp = c.post(f"{scripted.upstream.url}/v2/rerank", content=body, headers={"Content-Type": "application/json"})
    assert (resp.status_code, resp.json()["code"]) == (400, "body_invalid_json"), resp.text
    assert _sent_since(scripted, mark) == []


# -- 3. answers the masking could not read ------------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("encoding", ["utf-16", "utf-32-le"])
def test_answer_not_utf8_is_withheld(scripted: Scripted, c: httpx.Client, encoding: str, framing: str) -> None:
    key = aws_key()
    body = json.dumps({"results": [], "note": key}).encode(encoding)
    chunks = [body[:10], body[10:]] if framing == "chunked" else None
    scripted.upstream.answer = lambda seen: http_answer(200, {"Content-Type": "application/json"}, body, chunks=chunks)
    before = scripted.snapshot()
    try:
        resp = c.post(f"{scripted.upstream.url}/v2/rerank", json=RERANK)
    except httpx.RemoteProtocolError:
        resp = None  # a streamed answer is cut: the client sees the connection end, never the body
    if resp is not None:
        assert key.encode() not in resp.content
        if framing == "content-length":
            assert (resp.status_code, resp.json()["code"]) == (502, "upstream_response_not_utf8")
    (record,) = scripted.new_records(before, 1)
    assert (record["decision"], record["error"]) == ("blocked", "upstream_response_not_utf8")
    assert key.encode() not in scripted.record_bytes()


@pytest.mark.parametrize("hidden", ["key", "email"])
def test_answer_escape_behind_whitespace_is_masked(scripted: Scripted, c: httpx.Client, hidden: str) -> None:
    value = aws_key() if hidden == "key" else f"{secrets.token_hex(4)}@example.org"
    esc = value.replace("@", "\\u0040") if hidden == "email" else escaped(value)
    body = b" " * 80 + ('{"results": [], "note": "' + esc + '"}').encode()
    scripted.upstream.answer = lambda seen: http_answer(200, {"Content-Type": "text/plain"}, body)
    resp = c.post(f"{scripted.upstream.url}/v2/rerank", json=RERANK)
    assert resp.status_code == 200
    assert value not in json.loads(resp.content)["note"] and "[REDACTED:" in json.loads(resp.content)["note"]


# -- 4. refused requests are recorded masked, with no token --------------------------------------


def test_refused_requests_are_recorded_masked(scripted: Scripted, c: httpx.Client, token: str) -> None:
    key, email = aws_key(), f"{secrets.token_hex(4)}@example.org"
    url = scripted.upstream.url
    mark = len(scripted.upstream.seen)
    leaky = {"query": f"q {key} {email}", "documents": ["a", email]}
    before = scripted.snapshot()
    r1 = c.post(f"{url}/v2/chat", json=leaky)  # no operation of the connection: 403
    assert (r1.status_code, r1.json()["code"]) == (403, "operation_not_allowed")
    with httpx.Client(proxy=scripted.gateway.proxy_url(None), verify=str(scripted.bundle), trust_env=False) as anon:
        r2 = anon.post(f"{url}/v2/rerank", json=leaky)  # no token at all: 407
    assert r2.status_code == 407
    big = {"query": f"q {key}", "documents": [f"d {email}"] * 1001}
    r3 = c.post(f"{url}/v2/rerank", json=big)  # over max_documents
    assert r3.status_code in (403, 413) and r3.json()["code"] == "payload_too_large"
    assert _sent_since(scripted, mark) == []
    new = scripted.new_records(before, 3)
    assert [r["status"] for r in new if r["method"] == "POST"] == [403, 407, r3.status_code]
    blob = scripted.record_bytes()
    assert key.encode() not in blob and email.encode() not in blob


def test_token_in_the_fragment_is_not_recorded(scripted: Scripted, token: str) -> None:
    """`#access_token=<token>` written into the request line by a raw client: never in a record."""
    before = scripted.snapshot()
    host = f"127.0.0.1:{scripted.upstream.port}"
    sock = socket.create_connection(("127.0.0.1", scripted.gateway.port), timeout=30)
    sock.sendall(f"CONNECT {host} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    if b" 200 " in head.split(b"\r\n", 1)[0]:
        tls = ssl.create_default_context(cafile=str(scripted.bundle)).wrap_socket(sock, server_hostname="127.0.0.1")
        tls.sendall(
            f"POST /v2/rerank#access_token={token} HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}".encode()
        )
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
        assert b" 407 " in answer.split(b"\r\n", 1)[0], answer[:200]
        (record,) = scripted.new_records(before, 1)
        assert record["path"] in ("/v2/rerank", "[withheld]")  # the token was found in the target
    sock.close()
    signature = token.rsplit(".", 1)[1]
    assert signature.encode() not in scripted.record_bytes()


# -- 5. a store's field limit holds for every framing --------------------------------------------


@pytest.mark.parametrize("framing", ["chunked", "event-stream", "content-length"])
def test_store_fields_hold_for_every_framing(
    scripted: Scripted, mint: Callable[..., dict[str, Any]], framing: str
) -> None:
    store_token: str = mint("store-test", sub=READER_SUB)["token"]
    answer = {
        "ids": [["c1"]], "documents": [["doc"]], "distances": [[0.1]], "metadatas": [[{"src": "a"}]],
        "embeddings": [[[0.5, 0.25]]], "uris": [["s3://private/c1"]], "included": ["documents", "embeddings", "uris"],
    }
    raw = json.dumps(answer).encode()
    ctype = "text/event-stream" if framing == "event-stream" else "application/json"
    chunks = None if framing == "content-length" else [raw[:20], raw[20:]]
    scripted.upstream.answer = lambda seen: http_answer(200, {"Content-Type": ctype}, raw, chunks=chunks)
    with client(scripted.gateway, scripted.bundle, store_token) as cl:
        resp = cl.post(
            f"https://localhost:{scripted.upstream.port}/api/v1/collections/candidates/query",
            json={"query_embeddings": [[0.5, 0.25]], "n_results": 1},
        )
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert set(got) == {"ids", "documents", "distances", "metadatas", "included"}
    assert got["included"] == ["documents"] and b"s3://private" not in resp.content


@pytest.mark.parametrize("ctype", ["text/event-stream", "application/json"])
def test_streamed_escape_is_masked(scripted: Scripted, c: httpx.Client, ctype: str) -> None:
    """`\\u0041KIA…` in a streamed answer's JSON string, split across chunks: a client's parser
    reads an AWS key, so the stream decodes escapes too."""
    key = aws_key()
    event = ('{"text": "see ' + escaped(key) + '"}').encode()
    raw = b"data: " + event + b"\n\n" if ctype == "text/event-stream" else event
    cut = raw.index(b"\\u") + 3
    scripted.upstream.answer = lambda seen: http_answer(200, {"Content-Type": ctype}, chunks=[raw[:cut], raw[cut:]])
    resp = c.post(f"{scripted.upstream.url}/v2/rerank", json=RERANK)
    assert resp.status_code == 200
    text = json.loads(resp.content.removeprefix(b"data: "))["text"]
    assert key not in text and "[REDACTED:aws_access_key_id:" in text
