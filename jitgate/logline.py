"""One gateway log line: a JSON object of named fields, with no value from the traffic in it.

jitgate's own log calls carry identifiers only (flow id, connection name, decision, code, an
exception's type). mitmproxy's messages are free text and some quote the traffic: "Bad HTTP
request line: b'GET /?k=...'", "Client closed connection before completing request headers:
b'...Proxy-Authorization: ...'", an upstream's unexpected bytes. `scrub` removes what such text can
hold (bytes literals, query strings and fragments, URL user info, header values, JWTs, AWS key
ids) before a line is written; `render` builds the line from named fields only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

# Fields a caller may attach to a record (logging's `extra=`); anything else is not written.
FIELDS = ("event", "flow", "client", "conn", "decision", "code", "status", "exc", "error", "trace")

_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"""(?<!\w)(?:b'(?:[^'\\]|\\.)*'?|b"(?:[^"\\]|\\.)*"?)"""), "<bytes>"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]*@"), r"\1<userinfo>@"),
    (re.compile(r"[?#][^\s'\"<>]+"), "?<query>"),
    (
        re.compile(r"(?i)\b(authorization|cookie|[\w-]*(?:key|token|secret|password))(\s*[:=]\s*)[^\r\n]+"),
        r"\1\2<value>",
    ),
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)?"), "<jwt>"),
    (re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{12,}"), "<aws-key>"),
)


def scrub(text: str) -> str:
    """`text` without anything the traffic could have put in it (see the module docstring)."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def render(*, time: str, level: str, logger: str, message: str, fields: Mapping[str, object]) -> str:
    """The JSON line: time, level, logger, the scrubbed message and the known `fields` that are set."""
    line: dict[str, object] = {"time": time, "level": level, "logger": logger, "msg": scrub(message)}
    for name in FIELDS:
        value = fields.get(name)
        if value is not None:
            line[name] = value if isinstance(value, int | float | bool) else scrub(str(value))
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"))
