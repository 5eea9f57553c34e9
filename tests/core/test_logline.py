"""jitgate.logline: what mitmproxy's free-text messages can quote of the traffic is scrubbed."""

from __future__ import annotations

import json
import secrets
import string

import pytest

from jitgate.logline import render, scrub


def _aws_key() -> str:
    return "AKIA" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))


@pytest.mark.parametrize(
    "template",
    [
        "127.0.0.1:5: Bad HTTP request line: b'GET /?k={s} HTTP/1.1'",
        'Client closed connection before completing request headers: b"Proxy-Authorization: Basic {s}"',
        "server said b'{s}",  # a bytes literal cut short
        "GET https://api.example/v2/rerank?api_key={s}&x=1",
        "GET https://api.example/v2/rerank#{s}",
        "connect to https://user:{s}@host.example/",
        "header Authorization: Bearer {s}",
        "X-Api-Key={s}",
        "cookie: session={s}",
    ],
)
def test_traffic_quoted_in_a_message_is_scrubbed(template: str) -> None:
    planted = secrets.token_hex(16)
    assert planted not in scrub(template.format(s=planted))


def test_tokens_and_aws_key_ids_are_scrubbed_anywhere() -> None:
    key = _aws_key()
    jwt = "eyJ" + secrets.token_urlsafe(20) + ".eyJ" + secrets.token_urlsafe(20) + "." + secrets.token_urlsafe(30)
    out = scrub(f"saw {key} and {jwt} in passing")
    assert key not in out and jwt not in out
    assert out == "saw <aws-key> and <jwt> in passing"


def test_a_b_inside_a_word_starts_no_bytes_literal() -> None:
    assert scrub('version "61f9ab" of policy') == 'version "61f9ab" of policy'


def test_render_writes_known_fields_only_and_scrubs_them() -> None:
    planted = secrets.token_hex(16)
    line = json.loads(
        render(
            time="t", level="info", logger="x", message="m",
            fields={"flow": "f1", "status": 403, "code": f"c?{planted}", "url": planted, "headers": planted},
        )
    )
    assert line == {"time": "t", "level": "info", "logger": "x", "msg": "m", "flow": "f1", "status": 403,
                    "code": "c?<query>"}
