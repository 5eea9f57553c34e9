"""jitgate.request_target: the method, override headers and Host/authority decisions, as values."""

from __future__ import annotations

import pytest

from jitgate.request_target import REFUSED_HEADERS, authority, header_error, method_error, parse_authority, target_error


@pytest.mark.parametrize("method", ["POST", "GET", "DELETE", "PATCH", "VERSION-CONTROL"])
def test_upper_case_tokens_are_methods(method: str) -> None:
    assert method_error(method) is None


@pytest.mark.parametrize(
    "method",
    ["post", "Post", "pOST", "POST ", " POST", "PO ST", "POST\t", "", "-", "POST-", "PÖST", "P0ST", "POST\x00"],
)
def test_anything_else_is_refused(method: str) -> None:
    err = method_error(method)
    assert err is not None and (err.status, err.code) == (400, "method_not_allowed")


@pytest.mark.parametrize("name", [*sorted(REFUSED_HEADERS), "X-HTTP-Method-Override", "X_HTTP_METHOD_OVERRIDE",
                                  "x_original_url", "X-Forwarded_Host", "FORWARDED"])
def test_override_headers_are_refused_in_every_spelling(name: str) -> None:
    err = header_error(["content-type", name])
    assert err is not None and (err.status, err.code) == (403, "header_not_allowed")
    assert name in err.message  # the name, never a value


@pytest.mark.parametrize("names", [[], ["content-type", "authorization", "x-forwarded-for", "x-request-id"]])
def test_ordinary_headers_pass(names: list[str]) -> None:
    assert header_error(names) is None


@pytest.mark.parametrize(
    ("value", "scheme", "parsed"),
    [
        ("api.cohere.com", "https", ("api.cohere.com", 443)),
        ("API.Cohere.COM.", "https", ("api.cohere.com", 443)),
        ("api.cohere.com:8443", "https", ("api.cohere.com", 8443)),
        ("store", "http", ("store", 80)),
        ("[::1]:9", "https", ("::1", 9)),
        ("127.0.0.1:0", "https", None),
        ("127.0.0.1:65536", "https", None),
        ("127.0.0.1:", "https", None),
        ("user@127.0.0.1", "https", None),
        ("127.0.0.1/x", "https", None),
        ("::1", "https", None),
        ("a b", "https", None),
        ("", "https", None),
    ],
)
def test_parse_authority(value: str, scheme: str, parsed: tuple[str, int] | None) -> None:
    assert parse_authority(value, scheme) == parsed


@pytest.mark.parametrize(
    ("host", "port", "scheme", "shown"),
    [("127.0.0.1", 8443, "https", "127.0.0.1:8443"), ("a.test", 443, "https", "a.test"), ("::1", 80, "http", "[::1]")],
)
def test_authority_is_written_as_a_host_header(host: str, port: int, scheme: str, shown: str) -> None:
    assert authority(host, port, scheme) == shown
    assert parse_authority(shown, scheme) == (host, port)


@pytest.mark.parametrize(
    ("hosts", "request_authority", "http1", "code"),
    [  # the target is the tunnel's 127.0.0.1:8443
        (["127.0.0.1:8443"], "", True, None),
        (["127.0.0.1:8443"], "127.0.0.1:8443", True, None),  # absolute-form naming its own tunnel
        ([], "127.0.0.1:8443", False, None),  # HTTP/2 :authority alone
        ([], "", True, "host_invalid"),
        ([], "127.0.0.1:8443", True, "host_invalid"),  # HTTP/1 needs a Host even in absolute-form
        ([], "", False, "host_invalid"),
        (["127.0.0.1:8443", "127.0.0.1:8443"], "", True, "host_invalid"),
        (["127.0.0.1:8443 x"], "", True, "host_invalid"),
        (["evil.example"], "", True, "host_not_allowed"),
        (["localhost:8443"], "", True, "host_not_allowed"),  # another connection's name for the same server
        (["127.0.0.1"], "", True, "host_not_allowed"),  # default port 443, not the tunnel's
        (["127.0.0.1:1"], "", True, "host_not_allowed"),
        (["127.1:8443"], "", True, "host_not_allowed"),
        (["2130706433:8443"], "", True, "host_not_allowed"),
        (["0x7f.0.0.1:8443"], "", True, "host_not_allowed"),
        (["[::ffff:127.0.0.1]:8443"], "", True, "host_not_allowed"),
        (["127.0.0.1:8443"], "evil.example", True, "host_not_allowed"),  # absolute-form to another authority
        (["127.0.0.1:8443"], "evil.example", False, "host_not_allowed"),  # :authority and Host disagree
    ],
)
def test_target_error(hosts: list[str], request_authority: str, http1: bool, code: str | None) -> None:
    err = target_error(
        host="127.0.0.1", port=8443, scheme="https", host_headers=hosts, request_authority=request_authority,
        http1=http1,
    )
    assert (err.code if err else None) == code
