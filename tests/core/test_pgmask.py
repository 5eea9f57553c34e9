"""jitgate.pgmask on message bodies: which column types are scanned, jsonb's binary version byte,
NULLs, and the row's values kept in number and order."""

from __future__ import annotations

import secrets
import struct

import pytest

from jitgate import pgmask
from jitgate.inspect import Scanner, actions
from jitgate.pgwire import WireError
from jitgate.policy import MaskProfile


def _desc(*cols: tuple[str, int, int]) -> bytes:
    body = struct.pack("!H", len(cols))
    for name, oid, fmt in cols:
        body += name.encode() + b"\0" + struct.pack("!IhIhih", 0, 0, oid, -1, -1, fmt)
    return body


def _row(*values: bytes | None) -> bytes:
    return pgmask._row(values)


def test_text_like_columns_masked_others_untouched() -> None:
    scanner = Scanner(secrets.token_bytes(32))
    plan = actions.plan(MaskProfile(), "response")
    email = f"{secrets.token_hex(4)}@example.com".encode()
    cols = pgmask.row_description(
        _desc(("t", 25, 0), ("j", 3802, 1), ("b", 17, 1), ("n", 25, 0), ("v", 1043, 1), ("js", 114, 0))
    )
    jsonb = b"\x01" + b'{"mail": "' + email + b'"}'
    row = _row(b"x " + email, jsonb, email, None, email, b'"' + email + b'"')
    body, found = pgmask.mask_row(scanner, plan, cols, row)
    values = pgmask._values(body)
    assert len(values) == 6 and values[3] is None
    assert values[2] == email  # bytea: never scanned as text
    assert email not in body.replace(values[2], b"")
    assert values[1] is not None and values[1][:1] == b"\x01" and b"[REDACTED:email:" in values[1]
    assert {c for c, _ in found} == {"t", "j", "v", "js"}


def test_clean_row_unchanged_and_bad_rows_refused() -> None:
    scanner = Scanner(secrets.token_bytes(32))
    plan = actions.plan(MaskProfile(), "response")
    cols = pgmask.row_description(_desc(("t", 25, 0)))
    clean = _row(b"nothing here")
    assert pgmask.mask_row(scanner, plan, cols, clean) == (clean, [])
    with pytest.raises(WireError):
        pgmask.mask_row(scanner, plan, cols, _row(b"a", b"b"))  # more values than columns
    with pytest.raises(WireError):
        pgmask.mask_row(scanner, plan, cols, clean + b"x")
