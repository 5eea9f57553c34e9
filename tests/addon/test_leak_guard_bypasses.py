"""leak_guard hook tests for what an outside tester got past the inspection (issue 16).

Each case is driven through the hooks as mitmproxy calls them; tests/hostile/test_bypasses.py
sends the same through a real gateway.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mitmproxy import http

from addon import meta
from addon.leak_guard import LeakGuard
from tests.addon.test_leak_guard import _flow, _rerank, guard

__all__ = ["guard"]

_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def _aws_key(seed: int) -> str:
    rng = random.Random(seed)
    return "AKIA" + "".join(rng.choice(_B32) for _ in range(16))


def _escaped(text: str) -> str:
    """`text` with its first character as a JSON `\\u` escape: no scanner sees it raw."""
    return f"\\u{ord(text[0]):04x}" + text[1:]


def _hidden_key_bodies(key: str) -> dict[str, tuple[bytes, str]]:
    doc = json.dumps({"query": "q", "documents": [key]})
    esc = '{"query": "q", "documents": ["' + _escaped(key) + '"]}'
    return {
        "utf-16": (doc.encode("utf-16"), "application/json"),
        "utf-16-le": (doc.encode("utf-16-le"), "application/json"),
        "utf-16-be": (doc.encode("utf-16-be"), "application/json"),
        "utf-32": (doc.encode("utf-32"), "application/json"),
        "utf-32-be": (doc.encode("utf-32-be"), ""),
        "utf-8 bom": (b"\xef\xbb\xbf" + esc.encode(), "text/plain"),
        "latin-1": (doc.replace("q", "\xe9").encode("latin-1"), "application/json"),
    }


@pytest.mark.parametrize("case", sorted(_hidden_key_bodies("AKIA")))
def test_request_not_utf8_is_refused(guard: LeakGuard, case: str) -> None:
    body, ctype = _hidden_key_bodies(_aws_key(1))[case]
    f = _flow(body, headers={"content-type": ctype} if ctype else None)
    if not ctype:
        del f.request.headers["content-type"]
    guard.request(f)
    assert f.response is not None and (f.response.status_code, meta.state_of(f).error) == (400, "body_not_utf8")
    assert not meta.state_of(f).inspected  # so the recorder keeps the body out of the record


@pytest.mark.parametrize("lead", [b" " * 80, b"\n\t " * 40, b"\r\n" * 100])
@pytest.mark.parametrize("ctype", ["text/plain", ""])
def test_escape_behind_long_whitespace_is_found(guard: LeakGuard, lead: bytes, ctype: str) -> None:
    key = _aws_key(2)
    f = _flow(lead + ('{"documents": ["' + _escaped(key) + '"]}').encode())
    if ctype:
        f.request.headers["content-type"] = ctype
    else:
        del f.request.headers["content-type"]
    guard.request(f)
    assert f.response is not None and meta.state_of(f).error == "leak_blocked"


def test_top_level_json_string_is_read_as_json(guard: LeakGuard) -> None:
    f = _flow(('"' + _escaped(_aws_key(3)) + '"').encode(), headers={"content-type": "text/plain"})
    guard.request(f)
    assert f.response is not None and meta.state_of(f).error == "leak_blocked"


@pytest.mark.parametrize(
    "body",
    [
        b'{"documents": ["a"], "documents": ["b"]}',
        b'{"q": {"x": 1, "x": 2}}',
        b'[{"a": 1}, {"b": 1, "b": 2}]',
        b'{"score": NaN}',
        b'{"score": -Infinity}',
        b"Infinity",
        b'{"score": 1e99999}',
        b'{"score": ' + b"9" * 400 + b".0}",
        b"[" * 3000 + b"]" * 3000,
        b'{"documents": ["a",]}',  # says JSON, does not parse
    ],
)
def test_request_that_is_no_strict_json_is_refused(guard: LeakGuard, body: bytes) -> None:
    f = _flow(body)
    guard.request(f)
    assert f.response is not None and (f.response.status_code, meta.state_of(f).error) == (400, "body_invalid_json")


@pytest.mark.parametrize("body", [b"plain words, not json", b"a=1&b=2", b"12 monkeys", "caf\u00e9 ok".encode()])
def test_text_bodies_still_pass(guard: LeakGuard, body: bytes) -> None:
    f = _flow(body, headers={"content-type": "text/plain"})
    guard.request(f)
    assert f.response is None and meta.state_of(f).inspected == ["request"]


def test_strict_json_with_big_but_finite_numbers_passes(guard: LeakGuard) -> None:
    f = _flow(b'{"query": "e100 e200", "documents": ["x"], "n": 1e300, "m": 123e-400}')
    guard.request(f)
    assert f.response is None


# -- answers ---------------------------------------------------------------------------------


def _answer(f: http.HTTPFlow, body: bytes, ctype: str, *, chunked: bool = False) -> None:
    f.response = http.Response.make(200, body, {"content-type": ctype} if ctype else {})
    if chunked:
        del f.response.headers["content-length"]
        f.response.headers["transfer-encoding"] = "chunked"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_answer_not_utf8_is_replaced(guard: LeakGuard, encoding: str) -> None:
    f = _flow(_rerank("a"))
    guard.request(f)
    _answer(f, json.dumps({"text": _aws_key(4)}).encode(encoding), "application/json")
    guard.responseheaders(f)
    guard.response(f)
    assert f.response is not None and f.response.status_code == 502
    assert meta.state_of(f).error == "upstream_response_not_utf8"
    assert _aws_key(4).encode() not in (f.response.content or b"")


@pytest.mark.parametrize("hidden", ["key", "email"])
def test_answer_escape_behind_whitespace_is_masked(guard: LeakGuard, hidden: str) -> None:
    value = _aws_key(5) if hidden == "key" else "ana@example.org"
    esc = value.replace("@", "\\u0040") if hidden == "email" else _escaped(value)
    f = _flow(_rerank("a"))
    guard.request(f)
    _answer(f, b" " * 80 + ('{"text": "' + esc + '"}').encode(), "text/plain")
    guard.responseheaders(f)
    guard.response(f)
    assert f.response is not None and f.response.status_code == 200
    assert value not in json.loads(f.response.content or b"")["text"]


def _streamed(f: http.HTTPFlow, data: bytes) -> bytes:
    stream: Any = f.response.stream if f.response is not None else None
    assert callable(stream)
    return b"".join(stream(data[:7]) + stream(data[7:]) + stream(b""))


@pytest.mark.parametrize("ctype,chunked", [("text/event-stream", False), ("application/json", True)])
def test_streamed_answer_headers_are_masked(guard: LeakGuard, ctype: str, chunked: bool) -> None:
    """The headers of a streamed answer go out before its body: they are masked in responseheaders."""
    key, injected = _aws_key(6), "sk-" + "q" * 30
    f = _flow(_rerank("a"))
    guard.request(f)
    meta.state_of(f).injected_secret = injected
    _answer(f, b"", ctype, chunked=True)
    if not chunked:
        del f.response.headers["transfer-encoding"]
    f.response.headers["X-Echo"] = "Bearer " + injected
    f.response.headers["X-Leak"] = f"{key} x@example.org"
    guard.responseheaders(f)
    assert meta.state_of(f).stream is not None
    headers = "\n".join(f"{k}: {v}" for k, v in f.response.headers.items())
    assert injected not in headers and key not in headers and "x@example.org" not in headers
    out = _streamed(f, b"data: fine\n\n")
    guard.response(f)
    assert out == b"data: fine\n\n" and meta.state_of(f).decision == "masked"
    assert {x.location for x in meta.state_of(f).findings} == {"response.header:x-echo", "response.header:x-leak"}


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32-be"])
def test_streamed_answer_not_utf8_is_cut(guard: LeakGuard, encoding: str) -> None:
    f = _flow(_rerank("a"))
    guard.request(f)
    _answer(f, b"", "text/event-stream", chunked=True)
    guard.responseheaders(f)
    out = _streamed(f, ("data: " + _aws_key(7) + "\n\n").encode(encoding))
    assert out == b"" and meta.state_of(f).error == "upstream_response_not_utf8"


def test_streamed_answer_invalid_utf8_later_is_cut(guard: LeakGuard) -> None:
    f = _flow(_rerank("a"))
    guard.request(f)
    _answer(f, b"", "text/event-stream", chunked=True)
    guard.responseheaders(f)
    assert callable(f.response.stream)
    first = f.response.stream(b"data: ok " + b"x" * 2000 + b"\n\n")
    f.response.stream(b"data: \xff\xfe\n\n")
    assert meta.state_of(f).error == "upstream_response_not_utf8"
    assert b"\xff" not in b"".join(first)


def test_buffer_flag_keeps_a_chunked_answer_whole(guard: LeakGuard) -> None:
    """scope_guard asks for the whole answer (a store's field filter): leak_guard does not stream it."""
    f = _flow(_rerank("a"))
    guard.request(f)
    _answer(f, b"", "application/json", chunked=True)
    meta.state_of(f).buffer_response = True
    guard.responseheaders(f)
    assert not f.response.stream and meta.state_of(f).stream is None
    f.response.content = gzip.decompress(gzip.compress(b'{"ids": ["a"]}'))
    guard.response(f)
    assert meta.state_of(f).inspected == ["request", "response"]


# -- property: nothing forwarded parses to something the gateway did not inspect ----------------

_ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)


def _escape_some(text: str, picks: list[int]) -> str:
    """JSON text with the characters at `picks` (inside strings or not) written as `\\u` escapes
    where that keeps it JSON: only characters inside string literals are escaped."""
    out, in_string, escaped_next = [], False, False
    for i, ch in enumerate(text):
        if in_string and not escaped_next and ch not in '"\\' and i in picks:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
        if escaped_next:
            escaped_next = False
        elif ch == "\\":
            escaped_next = True
        elif ch == '"':
            in_string = not in_string
    return "".join(out)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    value=_json_values,
    encoding=st.sampled_from(_ENCODINGS),
    lead=st.text(alphabet=" \t\r\n", max_size=200),
    ctype=st.sampled_from(["application/json", "text/plain", "", "application/octet-stream"]),
    ensure_ascii=st.booleans(),
    picks=st.lists(st.integers(0, 400), max_size=30),
    seed=st.integers(0, 2**16),
)
def test_nothing_forwarded_parses_to_an_uninspected_secret(
    guard: LeakGuard, value: Any, encoding: str, lead: str, ctype: str, ensure_ascii: bool, picks: list[int], seed: int
) -> None:
    key = _aws_key(seed)
    doc = {"query": "q", "documents": [value, f"see {key}"], "extra": value}
    text = lead + _escape_some(json.dumps(doc, ensure_ascii=ensure_ascii), picks)
    body = text.encode(encoding)
    f = _flow(body)
    if ctype:
        f.request.headers["content-type"] = ctype
    else:
        del f.request.headers["content-type"]
    guard.request(f)
    if f.response is not None:
        return  # refused: nothing was forwarded
    sent = f.request.content or b""
    try:
        parsed = json.loads(sent)  # what a Python upstream reads: json.detect_encoding, BOMs, any whitespace
    except (ValueError, RecursionError):
        return
    assert not any(key in s for s in _strings(parsed)), (encoding, ctype, sent[:120])
