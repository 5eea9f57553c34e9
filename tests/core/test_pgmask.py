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


def _desc_from(*cols: tuple[str, int, int, int, int]) -> bytes:
    """A RowDescription whose columns name their table (oid) and attribute number."""
    body = struct.pack("!H", len(cols))
    for name, table, attnum, oid, fmt in cols:
        body += name.encode() + b"\0" + struct.pack("!IhIhih", table, attnum, oid, -1, -1, fmt)
    return body


def test_mask_columns_mask_whatever_the_value_holds_in_each_type_and_format() -> None:
    scanner = Scanner(secrets.token_bytes(32))
    plan = actions.plan(MaskProfile(), "response")
    masked = frozenset({(7001, 3), (7001, 4), (7001, 5), (7001, 6), (7001, 7)})
    cols = pgmask.row_description(
        _desc_from(
            ("id", 7001, 1, 20, 1),  # bigint, not masked
            ("e", 7001, 3, 25, 0),  # text, text format (an alias: the origin decides, not the name)
            ("e2", 7001, 3, 1043, 1),  # varchar, binary format
            ("emb", 7001, 4, 16385, 1),  # a vector: NULL, the one value every type holds
            ("j", 7001, 5, 114, 0),  # json: a JSON string
            ("jb", 7001, 6, 3802, 1),  # jsonb, binary: version byte, then a JSON string
            ("n", 7001, 7, 25, 0),  # NULL stays NULL
            ("expr", 0, 0, 25, 0),  # a computed column: no origin
        )
    )
    forced = pgmask.forced_columns(cols, masked)
    assert forced == frozenset({1, 2, 3, 4, 5, 6})
    plain = b"no secret here"
    vector = b"\x00\x08" + b"\x00" * 34
    row = _row(struct.pack("!q", 9), plain, plain, vector, b'{"a": 1}', b'\x01{"a": 1}', None, plain)
    body, found = pgmask.mask_row(scanner, plan, cols, row, forced=forced, tag=scanner.tag)
    values = pgmask._values(body)
    marker = b"[REDACTED:column:" + scanner.tag(plain).encode() + b"]"
    assert len(values) == 8 and values[0] == struct.pack("!q", 9) and values[7] == plain
    assert values[1] == marker and values[2] == marker  # the same value, the same tag: it correlates
    assert values[3] is None and values[6] is None
    assert values[4] == b'"[REDACTED:column:' + scanner.tag(b'{"a": 1}').encode() + b']"'
    assert values[5] is not None and values[5][:1] == b"\x01" and values[5][1:].startswith(b'"[REDACTED:column:')
    assert [(c, f.type) for c, f in found] == [(c, "column") for c in ("e", "e2", "emb", "j", "jb")]


def test_masked_attributes_from_the_catalog_rows() -> None:
    rows = [
        _row(b"7001", b"3", b"public", b"candidates", b"owner_email"),
        _row(b"7002", b"2", b"public", b"audit_notes", b"owner_email"),
        _row(b"7003", b"4", b"other", b"candidates", b"embedding"),
        _row(b"7001", b"4", b"public", b"candidates", b"embedding"),
    ]
    names = ["owner_email", "public.candidates.embedding"]
    assert pgmask.masked_attributes(rows, names, "public") == {(7001, 3), (7002, 2), (7001, 4)}
    assert pgmask.masked_attributes(rows, ["candidates.owner_email"], "public") == {(7001, 3)}
    query = pgmask.masked_attributes_query(["x", "it's", "t.x"])
    assert "ARRAY['it''s', 'x']" in query  # one entry per name, quoted as a literal
    with pytest.raises(WireError):
        pgmask.masked_attributes([_row(b"1", None, b"a", b"b", b"c")], names, "public")


def test_a_json_escaped_email_in_json_columns_is_masked() -> None:
    scanner = Scanner(secrets.token_bytes(32))
    plan = actions.plan(MaskProfile(), "response")
    email = f"{secrets.token_hex(4)}@example.com"
    escaped = b'{"mail": "' + email.replace("@", "\\u0040").encode() + b'"}'
    cols = pgmask.row_description(_desc(("js", 114, 0), ("jb", 3802, 1), ("jt", 3802, 0)))
    body, found = pgmask.mask_row(scanner, plan, cols, _row(escaped, b"\x01" + escaped, escaped))
    values = pgmask._values(body)
    assert all(v is not None and b"\\u0040" not in v and b"[REDACTED:email:" in v for v in values)
    assert values[1] is not None and values[1][:1] == b"\x01"
    assert [c for c, _ in found] == ["js", "jb", "jt"]


def test_a_burst_of_rows_masks_as_each_row_alone() -> None:
    scanner = Scanner(secrets.token_bytes(32))
    plan = actions.plan(MaskProfile(), "response")
    cols = pgmask.row_description(_desc(("id", 23, 0), ("body", 25, 0), ("meta", 114, 0)))
    rows = []
    for i in range(60):
        mail = f" write to {secrets.token_hex(3)}@example.com" if i % 7 == 0 else ""
        text = f"candidate {i} about rerankers{mail}"
        meta = b'{"n": %d}' % i if i % 5 else b'{"who": "' + secrets.token_hex(3).encode() + b'\\u0040example.org"}'
        rows.append(_row(str(i).encode(), text.encode(), meta))
    shape = pgmask.RowShape.of(cols)
    burst = pgmask.mask_rows(scanner, plan, shape, rows)
    assert burst == [pgmask.mask_row(scanner, plan, cols, r) for r in rows]
    assert sum(1 for body, _ in burst if b"[REDACTED:email:" in body) == len({*range(0, 60, 7), *range(0, 60, 5)})
    assert all(out is row for (out, found), row in zip(burst, rows, strict=True) if not found)


def test_row_shapes_are_cached_per_description_and_bounded() -> None:
    cache = pgmask.ShapeCache(frozenset({(7001, 2)}), size=3)
    desc = _desc_from(("id", 7001, 1, 23, 0), ("mail", 7001, 2, 25, 0), ("body", 7001, 3, 25, 0))
    shape = cache.shape(desc)
    assert shape.forced == (1,) and shape.scanned == (2,)
    assert cache.shape(desc) is shape
    for n in range(3):
        cache.shape(_desc((f"c{n}", 25, 0)))
    assert cache.shape(desc) is not shape and cache.shape(desc) == shape  # the oldest went
    with pytest.raises(WireError):
        cache.shape(b"\x00")
