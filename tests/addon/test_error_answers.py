"""error_answers: mitmproxy's own error answers become jitgate JSON, without mitmproxy's text."""

from __future__ import annotations

import json

import pytest
from mitmproxy.net.http.http1 import read_response_head
from mitmproxy.proxy.layers.http import _http1

from addon import error_answers, mitmproxy_compat


@pytest.mark.parametrize(("status", "code"), [(502, "upstream_unavailable"), (413, "payload_too_large"),
                                              (400, "bad_request"), (504, "upstream_timeout"), (500, "gateway_error")])
def test_answer_is_json_with_a_stable_code(status: int, code: str) -> None:
    raw = error_answers.json_error_response(status, "server 10.0.0.7:443 closed connection")
    head, _, body = raw.partition(b"\r\n\r\n")
    resp = read_response_head(head.split(b"\r\n"))
    assert resp.status_code == status and resp.headers["content-type"] == "application/json"
    assert json.loads(body) == {"code": code, "message": error_answers.ANSWERS.get(status, ("", ""))[1] or
                                json.loads(body)["message"]}
    assert b"10.0.0.7" not in raw


def test_install_replaces_mitmproxys_builder() -> None:
    original = _http1.make_error_response
    try:
        mitmproxy_compat.install()
        assert _http1.make_error_response is error_answers.json_error_response
    finally:
        _http1.make_error_response = original


def test_the_answer_takes_the_dialect_the_error_hook_named() -> None:
    error_answers._dialect.set("voyage")
    _, body = error_answers.json_error_body(413)
    message = error_answers.ANSWERS[413][1]
    assert json.loads(body) == {"code": "payload_too_large", "message": message, "detail": message}
    _, again = error_answers.json_error_body(413)  # once: the next answer has no dialect
    assert json.loads(again) == {"code": "payload_too_large", "message": message}
