"""jsontext.read: one rule for what a body is, the way a JSON parser reads it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jitgate import jsontext
from jitgate.jsontext import NOT_JSON, Problem, Utf8Stream


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"a": "b"}).encode("utf-16"),
        json.dumps({"a": "b"}).encode("utf-16-le"),
        json.dumps({"a": "b"}).encode("utf-16-be"),
        json.dumps({"a": "b"}).encode("utf-32"),
        json.dumps({"a": "b"}).encode("utf-32-le"),
        json.dumps({"a": "b"}).encode("utf-32-be"),
        b"\xef\xbb\xbf{}",
        b"{\"a\": \"\xff\"}",
        b"caf\xe9",
        b"\x00\x00",
    ],
)
@pytest.mark.parametrize("strict", [True, False])
def test_what_a_parser_could_read_otherwise_is_not_utf8(body: bytes, strict: bool) -> None:
    assert jsontext.read(body, "application/json", strict=strict).problem is Problem.NOT_UTF8


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": 1, "a": 2}', b'[{"x": {"y": 1, "y": 1}}]', b"NaN", b'{"n": -Infinity}', b"[1e400]",
        b"[" + b"9" * 320 + b".5]", b'{"a": [1, {"b": [2.5, "x", -1E+999]}], "c": "1e400"}',
        b'{"documents": ["a"], "n": {"m": 1.5e309}}', b"[" * 5000 + b"]" * 5000, b'{"a": }', b"  [1,]",
    ],
)
def test_requests_must_be_strict_json(body: bytes) -> None:
    read = jsontext.read(body, "text/plain", strict=True)
    assert (read.problem, read.json_text, read.value) == (Problem.INVALID_JSON, True, NOT_JSON)


@pytest.mark.parametrize(
    "body,ctype,json_text",
    [
        (b" " * 500 + b'{"a": "\\u0041"}', "", True),
        (b'"top-level"', "text/plain", True),
        (b"12", "", True),
        (b"hello world", "text/plain", False),
        (b"a=1&b=2", "application/x-www-form-urlencoded", False),
        (b"e100 is a word", "", False),
    ],
)
def test_json_text_is_decided_after_any_whitespace_or_by_parsing(body: bytes, ctype: str, json_text: bool) -> None:
    read = jsontext.read(body, ctype, strict=True)
    assert read.problem is None and read.json_text is json_text


def test_answers_are_parsed_leniently_but_must_be_utf8() -> None:
    assert jsontext.read(b'{"score": NaN}', "application/json", strict=False).problem is None
    assert jsontext.read(b"{not json", "application/json", strict=False) == jsontext.BodyText(NOT_JSON, True)
    assert jsontext.read(b"", "application/json", strict=False) is jsontext.EMPTY


def test_big_but_finite_numbers_and_escaped_lookalikes_pass() -> None:
    read = jsontext.read(b'{"e": "e123", "n": 1e300, "tiny": 1e-400, "i": 12345678901234567890}', "", strict=True)
    assert read.problem is None and read.value["n"] == 1e300


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
))
def test_any_json_python_writes_reads_back_the_same(value: object) -> None:
    body = json.dumps(value).encode()
    read = jsontext.read(body, "", strict=True)
    assert read.problem is None and read.value == json.loads(body)


@pytest.mark.parametrize("pieces", [[b"\xef", b"\xbb\xbf{}"], [b"{", b"\x00"], [b"ok \xc3", b"("], [b"\xff\xfe"]])
def test_utf8_stream_breaks_where_utf8_text_would(pieces: list[bytes]) -> None:
    check = Utf8Stream()
    with pytest.raises(ValueError):
        for piece in pieces:
            check.feed(piece)
        check.feed(b"", final=True)
    assert jsontext.utf8_text(b"".join(pieces)) is None


def test_utf8_stream_takes_a_character_split_across_pieces() -> None:
    check = Utf8Stream()
    data = "caf\u00e9 \U0001f600".encode()
    for i in range(len(data)):
        check.feed(data[i : i + 1])
    check.feed(b"", final=True)
