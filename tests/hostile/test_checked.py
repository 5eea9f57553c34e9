"""What the outside tester of issue 16 tried and found refused or masked, kept so, against a real gateway.

The issue's "checked and right" list: bodies in every content encoding and in malformed encoding
stacks, multipart and form bodies, secrets in JSON keys, headers, query strings and cookies, 1xx,
204 and 304 answers carrying secrets, Content-Length that says more or less than was sent, values
that try to break the JSON-lines records, and two tokens in one request. (Path tricks and other
connections' hosts are in test_request_target.py, SSE pieces splitting a secret in
tests/e2e/test_leak_guard_e2e.py, self-approval in tests/e2e/test_approvals_e2e.py.) The upstream
is scripted (`FaultyUpstream` "script"), so it answers what no API would and shows what it got.
"""

from __future__ import annotations

import gzip
import json
import secrets
import zlib
from collections.abc import Callable
from typing import Any

import brotli
import httpx
import pytest
import zstandard

from tests.hostile.conftest import RERANK, Scripted, answer_of, aws_key, tunnel
from tests.reliability.harness import Seen, client, http_answer


def _ok(_: Seen) -> bytes:
    return http_answer(200, {"Content-Type": "application/json"}, b'{"results": []}')


def _refused_and_unseen(s: Scripted, resp: httpx.Response, mark: int, secret: str) -> str:
    """The refusal's code, after checking nothing went upstream and `secret` is in no record."""
    assert 400 <= resp.status_code < 500, resp.text
    assert s.upstream.seen[mark:] == []
    assert secret.encode() not in s.record_bytes()
    code: str = resp.json()["code"]
    return code


# -- request bodies in every encoding ------------------------------------------------------------

_ENCODE: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstandard.ZstdCompressor().compress,
    "identity": lambda b: b,
}


@pytest.mark.parametrize("encoding", sorted(_ENCODE))
def test_a_compressed_request_is_inspected_decoded(scripted: Scripted, c: httpx.Client, encoding: str) -> None:
    key = aws_key()
    body = json.dumps({"query": "q", "documents": [f"doc {key}"]}).encode()
    scripted.upstream.answer = _ok
    mark = len(scripted.upstream.seen)
    resp = c.post(
        f"{scripted.upstream.url}/v2/rerank", content=_ENCODE[encoding](body),
        headers={"Content-Type": "application/json", "Content-Encoding": encoding},
    )
    assert _refused_and_unseen(scripted, resp, mark, key) == "leak_blocked"


@pytest.mark.parametrize(
    "encoding,wrap",
    [
        ("gzip, gzip", gzip.compress),  # says twice, is once
        ("gzip", lambda b: b),  # says gzip, is plain
        ("br", gzip.compress),  # says brotli, is gzip
        ("x-unknown", gzip.compress),  # no such coding
        ("gzip, , br", lambda b: brotli.compress(gzip.compress(b))),  # an empty member
        ("gzip, br", lambda b: brotli.compress(gzip.compress(b))),  # a stack: legal, not decoded, so refused
    ],
    ids=["twice-said-once-done", "gzip-is-plain", "br-is-gzip", "unknown", "empty-member", "stack"],
)
def test_a_malformed_encoding_stack_is_refused(
    scripted: Scripted, c: httpx.Client, encoding: str, wrap: Callable[[bytes], bytes]
) -> None:
    key = aws_key()
    body = json.dumps({"query": "q", "documents": [f"doc {key}"]}).encode()
    scripted.upstream.answer = _ok
    mark = len(scripted.upstream.seen)
    resp = c.post(
        f"{scripted.upstream.url}/v2/rerank", content=wrap(body),
        headers={"Content-Type": "application/json", "Content-Encoding": encoding},
    )
    assert _refused_and_unseen(scripted, resp, mark, key) in {"body_not_decodable", "leak_blocked"}


# -- bodies that are no JSON, and secrets outside the values -------------------------------------


def test_multipart_and_form_bodies_are_not_forwarded(scripted: Scripted, c: httpx.Client) -> None:
    key = aws_key()
    scripted.upstream.answer = _ok
    mark = len(scripted.upstream.seen)
    url = f"{scripted.upstream.url}/v2/rerank"
    multipart = c.post(url, files={"documents": ("d.txt", f"doc {key}".encode(), "text/plain")}, data={"query": "q"})
    form = c.post(url, data={"query": "q", "documents": f"doc {key}"})
    for resp in (multipart, form):
        assert _refused_and_unseen(scripted, resp, mark, key) in {"bad_request", "leak_blocked"}


@pytest.mark.parametrize("where", ["json-key", "escaped-json-key", "header", "header-name", "query", "cookie"])
def test_a_secret_outside_the_json_values_is_blocked(scripted: Scripted, c: httpx.Client, where: str) -> None:
    key = aws_key()
    scripted.upstream.answer = _ok
    mark = len(scripted.upstream.seen)
    url, body, headers = f"{scripted.upstream.url}/v2/rerank", dict(RERANK), {}
    if where == "json-key":
        body["meta"] = {key: 1}
    elif where == "escaped-json-key":
        raw = json.dumps(RERANK)[:-1] + ', "meta": {"\\u0041' + key[1:] + '": 1}}'
    elif where == "header":
        headers["X-Note"] = f"see {key}"
    elif where == "header-name":  # found in the tester's run of this file: names were never scanned
        headers[key] = "1"
    elif where == "query":
        url += f"?note={key}"
    else:
        headers["Cookie"] = f"session={key}"
    content = raw.encode() if where == "escaped-json-key" else json.dumps(body).encode()
    resp = c.post(url, content=content, headers={"Content-Type": "application/json", **headers})
    assert _refused_and_unseen(scripted, resp, mark, key) == "leak_blocked"


# -- answers with no body, or before the answer ---------------------------------------------------


def _raw_exchange(s: Scripted, token: str, request: bytes) -> bytes:
    """Every byte the gateway sends back to `request` written raw into a fresh tunnel."""
    with tunnel(s, token) as sock:
        sock.sendall(request)
        return answer_of(sock)


def _rerank_request(s: Scripted, body: bytes | None = None, *, length: int | None = None) -> bytes:
    body = json.dumps(RERANK).encode() if body is None else body
    size = len(body) if length is None else length
    return (
        f"POST /v2/rerank HTTP/1.1\r\nHost: 127.0.0.1:{s.upstream.port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\nConnection: close\r\n\r\n"
    ).encode() + body


@pytest.mark.parametrize("status", [103, 204, 304])
def test_headers_of_informational_and_bodiless_answers_are_masked(scripted: Scripted, token: str, status: int) -> None:
    key, email = aws_key(), f"{secrets.token_hex(4)}@example.org"
    leak = f"X-Leak: {key} {email}\r\n"

    def answer(seen: Seen) -> bytes:
        if status == 103:
            early = f"HTTP/1.1 103 Early Hints\r\n{leak}Link: </k?{key}>; rel=preload\r\n\r\n".encode()
            return early + http_answer(200, {"Content-Type": "application/json", "X-Leak": f"{key} {email}"},
                                       b'{"results": []}')
        # a 204 or 304 with a body it may not have: the body would be the next answer on the connection
        return f"HTTP/1.1 {status} X\r\n{leak}Content-Length: 0\r\nConnection: close\r\n\r\n{key}".encode()

    scripted.upstream.answer = answer
    got = _raw_exchange(scripted, token, _rerank_request(scripted))
    assert got.startswith(b"HTTP/1.1 "), got[:200]
    assert key.encode() not in got and email.encode() not in got
    assert b"[REDACTED:" in got or status == 103  # mitmproxy drops the 103 itself; the 200's header is masked
    assert key.encode() not in scripted.record_bytes()


# -- Content-Length that says more, or less, than was sent ----------------------------------------


def test_a_request_shorter_than_its_content_length_is_not_forwarded(scripted: Scripted, token: str) -> None:
    scripted.upstream.answer = _ok
    mark = len(scripted.upstream.seen)
    tls = tunnel(scripted, token)
    tls.sendall(_rerank_request(scripted, length=len(json.dumps(RERANK)) + 500))
    tls.close()  # the 500 bytes never come
    with client(scripted.gateway, scripted.bundle, token) as cl:  # the gateway is up and answers the next
        assert cl.post(f"{scripted.upstream.url}/v2/rerank", json=RERANK).status_code == 200
    assert len(scripted.upstream.seen[mark:]) == 1


def test_bytes_after_the_content_length_are_never_a_second_request_upstream(scripted: Scripted, token: str) -> None:
    """The rest after Content-Length is the next request on the connection: it meets the chain."""
    key = aws_key()
    scripted.upstream.answer = _ok
    mark = len(scripted.upstream.seen)
    smuggled = f"POST /v2/rerank HTTP/1.1\r\nX-Note: {key}\r\n\r\n".encode()
    got = _raw_exchange(scripted, token, _rerank_request(scripted) + smuggled)
    assert got.startswith(b"HTTP/1.1 200"), got[:200]
    seen = scripted.upstream.seen[mark:]
    assert len(seen) <= 1 and all(key.encode() not in s.head + s.body for s in seen)
    assert key.encode() not in scripted.record_bytes()


@pytest.mark.parametrize("shape", ["short", "long"])
def test_an_answer_beside_its_content_length_is_cut_or_refused(scripted: Scripted, token: str, shape: str) -> None:
    key = aws_key()
    payload = b'{"results": []}'

    def answer(_: Seen) -> bytes:
        said = len(payload) + 100 if shape == "short" else len(payload)
        extra = b"" if shape == "short" else f"\r\n\r\nHTTP/1.1 200 OK\r\nX-Leak: {key}\r\n\r\n{key}".encode()
        head = http_answer(200, {"Content-Type": "application/json"}, b"")
        head = head.replace(b"Content-Length: 0", f"Content-Length: {said}".encode())
        return head + payload + extra

    scripted.upstream.answer = answer
    got = _raw_exchange(scripted, token, _rerank_request(scripted))
    assert key.encode() not in got
    status = int(got.split(b" ", 2)[1])
    if shape == "short":  # the upstream went away before its body's end: the gateway's own 502
        assert status == 502, got[:300]
    else:
        assert status == 200 and got.endswith(payload), got[-200:]


# -- values that try to break the records ---------------------------------------------------------


def test_values_never_break_a_record_line(scripted: Scripted, c: httpx.Client) -> None:
    forged = '{"decision": "allowed", "sub": "forged", "record_id": "x"}'
    scripted.upstream.answer = _ok
    before = scripted.snapshot()
    body = {"query": f"q\n{forged}\r\n", "documents": [f"a\n{forged}", "b\u2028\u2029\x00"]}
    resp = c.post(
        f"{scripted.upstream.url}/v2/rerank%0A{forged.replace(' ', '')}", json=body,
        headers={"X-Trace": "t"}, params={"q": f"\n{forged}"},
    )
    assert resp.status_code in (200, 403, 404), resp.text
    new = scripted.new_records(before, 1)
    assert len(new) == 1 and new[0]["sub"] != "forged"
    for line in scripted.record_bytes().splitlines():
        if line.strip():
            record = json.loads(line)  # every line is one whole record
            assert record.get("sub") != "forged" and record.get("record_id") != "x"


# -- two tokens ------------------------------------------------------------------------------------


def test_two_tokens_in_one_request_reach_no_upstream(
    scripted: Scripted, mint: Callable[..., dict[str, Any]]
) -> None:
    """The tunnel's proxy credentials hold one token, the request's `Authorization: Bearer` another:
    the request's own decides (addon/token_gate.py: a token in the request, then the tunnel's), the
    record names it, and neither token reaches the upstream."""
    first, second = mint("cohere-test"), mint("cohere-test", sub="repo:acme/other:ref:refs/heads/main")
    scripted.upstream.answer = _ok
    before, mark = scripted.snapshot(), len(scripted.upstream.seen)
    with client(scripted.gateway, scripted.bundle, first["token"]) as cl:
        resp = cl.post(
            f"{scripted.upstream.url}/v2/rerank", json=RERANK, headers={"Authorization": f"Bearer {second['token']}"}
        )
    assert resp.status_code == 200, resp.text
    (seen,) = scripted.upstream.seen[mark:]
    sent = seen.head + seen.body
    for token in (first["token"], second["token"]):
        assert token.encode() not in sent and token.rsplit(".", 1)[1].encode() not in sent
    (record,) = scripted.new_records(before, 1)
    assert record["jti"] == second["jti"]
