"""addon/body.py: a flow's JSON body is parsed once and shared, and re-parsed when replaced."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from mitmproxy.test import tflow

from addon import body
from jitgate import jsontext


@pytest.fixture
def loads_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    calls: list[bytes] = []
    real = json.loads

    def counting(data: Any, **kw: Any) -> Any:
        calls.append(data)
        return real(data, **kw)

    monkeypatch.setattr(jsontext.json, "loads", counting)
    return calls


def test_request_parsed_once_then_shared(loads_calls: list[bytes]) -> None:
    f = tflow.tflow()
    f.request.content = json.dumps({"documents": ["a", "b"]}).encode()
    first = body.json_body(f)
    assert first == {"documents": ["a", "b"]}
    assert body.json_body(f) is first and body.json_body(f, "request") is first
    assert len(loads_calls) == 1


def test_replaced_body_is_parsed_again(loads_calls: list[bytes]) -> None:
    f = tflow.tflow()
    f.request.content = b'{"query": "one"}'
    assert body.json_body(f) == {"query": "one"}
    f.request.content = b'{"query": "[REDACTED:email]"}'  # e.g. leak_guard masked it
    assert body.json_body(f) == {"query": "[REDACTED:email]"}
    assert len(loads_calls) == 2


def test_encoded_body_is_decoded_first() -> None:
    f = tflow.tflow()
    f.request.headers["content-encoding"] = "gzip"
    f.request.raw_content = gzip.compress(b'{"texts": ["x"]}')
    assert body.json_body(f) == {"texts": ["x"]}


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"", None), (b"not json", body.NOT_JSON), (b"[" * 100_000, body.NOT_JSON), (b"null", None), (b"3", 3)],
)
def test_empty_and_non_json(content: bytes, expected: Any) -> None:
    f = tflow.tflow()
    f.request.content = content
    result = body.json_body(f)
    if expected is None or expected is body.NOT_JSON:
        assert result is expected
    else:
        assert result == expected


def test_sides_are_separate_and_forget_drops_both(loads_calls: list[bytes]) -> None:
    f = tflow.tflow(resp=True)
    f.request.content = b'{"side": "request"}'
    f.response.content = b'{"side": "response"}'  # type: ignore[union-attr]
    assert body.json_body(f)["side"] == "request"
    assert body.json_body(f, "response")["side"] == "response"
    body.forget(f)
    assert body.json_body(f, "response")["side"] == "response"
    assert len(loads_calls) == 3


def test_no_response_is_none() -> None:
    assert body.json_body(tflow.tflow(), "response") is None
