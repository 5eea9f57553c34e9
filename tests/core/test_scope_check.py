"""jitgate.scope_check: the token's connection, its body limits and the usage leases, without mitmproxy."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from jitgate import jsontext, scope_check
from jitgate.devstack.policy import policy_dict
from jitgate.jsontext import BodyText
from jitgate.policy import Policy
from jitgate.token import Claims, Limits, Scope

POLICY = Policy.model_validate(policy_dict("https://issuer.test"))


def _claims(conn: str = "cohere-test") -> Claims:
    return Claims(
        iss="https://b.test", aud="jitgate", sub="s", iat=1, nbf=1, exp=2_000_000_000, jti="j" * 16, conn=conn,
        scope=Scope(operations=("rerank",)), limits=Limits(), mask="default",
    )


@pytest.mark.parametrize(
    ("host", "tunnel", "code"),
    [
        ("cohere.upstream.test", None, None),
        ("cohere.upstream.test", "cohere.upstream.test", None),
        ("evil.test", None, "host_not_allowed"),
        ("jina.upstream.test", None, "wrong_connection"),
        ("cohere.upstream.test", "evil.test", "host_not_allowed"),
        ("cohere.upstream.test", "jina.upstream.test", "host_not_allowed"),  # Host leaves the tunnel's connection
    ],
)
def test_only_the_token_names_the_connection(host: str, tunnel: str | None, code: str | None) -> None:
    got = scope_check.token_connection(POLICY, _claims(), host, tunnel)
    if code is None:
        assert not isinstance(got, Exception) and got.name == "cohere-test"
    else:
        assert isinstance(got, Exception) and got.code == code
    assert scope_check.served(POLICY, "cohere.upstream.test") and not scope_check.served(None, "x")


def _text(body: Any) -> BodyText:
    return jsontext.read(json.dumps(body).encode(), "application/json", strict=True)


@pytest.mark.parametrize(
    ("limits", "raw", "encoding", "body", "code"),
    [
        (Limits(max_bytes=10), b"x" * 11, "", None, "payload_too_large"),
        (Limits(max_bytes=1000), gzip.compress(b"a" * 5000), "gzip", None, "payload_too_large"),  # once decoded
        (Limits(), b"not gzip", "gzip", None, "body_not_decodable"),
        (Limits(max_documents=2), b"{}", "", {"query": "q", "documents": ["a", "b", "c"]}, "payload_too_large"),
        (Limits(max_documents=2), b"{}", "", {"query": "q", "documents": ["a", "b"]}, None),
        (Limits(max_documents=2), b"{}", "", {"query": "q"}, "bad_request"),
        (Limits(), b"{}", "", None, None),
    ],
)
def test_limits(limits: Limits, raw: bytes, encoding: str, body: Any, code: str | None) -> None:
    asked: list[int] = []

    def text() -> BodyText:
        asked.append(1)
        return _text(body)

    err = scope_check.limits_error(limits, "cohere", "rerank", raw, encoding, text)
    assert (err.code if err is not None else None) == code
    assert bool(asked) is (limits.max_documents is not None)  # the body is read only to count


def test_a_body_that_is_no_json_cannot_be_counted() -> None:
    text = jsontext.read(b"plain words", "text/plain", strict=True)
    err = scope_check.limits_error(Limits(max_documents=2), "cohere", "rerank", b"plain words", "", lambda: text)
    assert err is not None and err.code in ("bad_request", "body_invalid_json")


def test_usage_leases_take_book_exhaust_and_prune() -> None:
    leases = scope_check.UsageLeases(prune_at=1)
    assert not leases.take("a")
    assert leases.granted("a", 100, 3) and leases.take("a") and leases.take("a") and not leases.take("a")
    assert not leases.granted("b", 100, 0) and "b" in leases.exhausted
    leases.granted("c", 500, 2)
    assert leases.full()
    assert leases.prune(200.0) == ["a"] and "b" not in leases.exhausted and leases.take("c")
