"""A request asks for exactly what the gateway checks: one exact method, one target, no overrides.

The scope is decided on the method, the path and the tunnel (or URL) host. An upstream that reads
the method case-insensitively (`post`), honours a method-override or URL-rewrite header, or routes
by a Host or an absolute-form authority the gateway never compared would perform what no check
saw (issue 16, items 8 to 10). These decisions take values; addon/http_only.py applies them before
any other hook, so the rest of the chain and the record only ever see a request whose Host is its
target.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from jitgate.errors import HeaderNotAllowed, HostInvalid, HostNotAllowed, JitgateError, MethodNotAllowed
from jitgate.policy import normalize_host

# RFC 9110 §9.1: a method is a case-sensitive token. Every registered method is upper-case
# letters, some with a hyphen (VERSION-CONTROL); anything else is refused, not normalised.
_METHOD = re.compile(r"[A-Z]+(?:-[A-Z]+)*")

# Headers by which common servers and frameworks take another method, URL or host than the request
# line and the tunnel say: Rails, Express, ASP.NET, Symfony, IIS, Spring, Werkzeug and the proxies in
# front of them. A job talks to the gateway directly, so none of them is needed on the way in.
REFUSED_HEADERS = frozenset(
    {
        # another method
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-method",
        # another URL
        "x-original-url",
        "x-rewrite-url",
        # another host
        "x-forwarded-host",
        "x-forwarded-server",
        "x-original-host",
        "x-host",
        "forwarded",  # RFC 7239 `host=`
    }
)

_AUTHORITY = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>[0-9]{1,5}))?")
_DEFAULT_PORTS = {"https": 443, "http": 80}


def method_error(method: str) -> JitgateError | None:
    """Why `method` is refused (None: an exact upper-case token)."""
    if _METHOD.fullmatch(method):
        return None
    return MethodNotAllowed("the method must be an upper-case token (RFC 9110 §9.1), as the scope checks it")


def header_error(names: Iterable[str]) -> JitgateError | None:
    """Why a request with these header names is refused (None: no override header).

    Names are compared with `_` read as `-`: CGI and WSGI servers put `X_HTTP_METHOD_OVERRIDE` and
    `X-HTTP-Method-Override` in the same environment variable.
    """
    for name in names:
        if name.lower().replace("_", "-") in REFUSED_HEADERS:
            return HeaderNotAllowed(f"the {name} header would make an upstream do what the scope never checked")
    return None


def parse_authority(value: str, scheme: str) -> tuple[str, int] | None:
    """(host in compared form, port) of a `host[:port]` value; None when it is no such thing."""
    m = _AUTHORITY.fullmatch(value)
    if m is None:
        return None
    port = int(m["port"]) if m["port"] else _DEFAULT_PORTS.get(scheme)
    if port is None or not 0 < port < 65536:
        return None
    return normalize_host(m["host"]), port


def authority(host: str, port: int, scheme: str) -> str:
    """The `host[:port]` of a target, as a Host header writes it (brackets for IPv6, no default port)."""
    shown = f"[{host}]" if ":" in host else host
    return shown if _DEFAULT_PORTS.get(scheme) == port else f"{shown}:{port}"


def target_error(
    *, host: str, port: int, scheme: str, host_headers: Sequence[str], request_authority: str, http1: bool
) -> JitgateError | None:
    """Why the request's Host and authority are refused for the target `host`:`port` (the tunnel's, or
    the absolute URL's); None when each names exactly that target.

    `host_headers` are every Host header value; `request_authority` is the absolute-form authority
    (HTTP/1) or `:authority` (HTTP/2), empty when there is none. HTTP/1 needs exactly one Host
    (RFC 9112 §3.2); HTTP/2 needs `:authority` or one Host (RFC 9113 §8.3.1).
    """
    if len(host_headers) > 1:
        return HostInvalid("the request has more than one Host header")
    named = [*host_headers, *([request_authority] if request_authority else [])]
    if not named or (http1 and not host_headers):
        return HostInvalid("the request has no Host header")
    want = (normalize_host(host), port)
    for value in named:
        got = parse_authority(value, scheme)
        if got is None:
            return HostInvalid("the request's Host is no host[:port]")
        if got != want:
            return HostNotAllowed("the Host header or the request's authority names another host than its tunnel")
    return None
