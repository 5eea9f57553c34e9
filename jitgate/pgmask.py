"""Masking Postgres result rows: RowDescription says which columns hold text, DataRow values are scanned.

Pure code over message bodies. Text-like columns (text, varchar, char, name, json, jsonb) are
scanned by the inspection `Scanner` and masked per the connection's plan, in either result
format: their binary form is their UTF-8 text (jsonb's has a leading version byte, kept). Other
types (bytea, vector, numbers, ...) are never scanned as text. A DataRow keeps its number and
order of values; only the lengths of masked values change.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from jitgate.inspect import Scanner, actions
from jitgate.inspect.masking import Finding
from jitgate.pgwire import WireError, cstring

TEXT_OIDS = frozenset({25, 1043, 1042, 19})  # text, varchar, bpchar, name
JSON_OID = 114
JSONB_OID = 3802
_JSONB_VERSION = b"\x01"


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    format: int  # 0 text, 1 binary

    @property
    def scanned(self) -> bool:
        return self.type_oid in TEXT_OIDS or self.type_oid in (JSON_OID, JSONB_OID)


def row_description(body: bytes) -> tuple[Column, ...]:
    """The columns of a RowDescription ('T') body."""
    if len(body) < 2:
        raise WireError("row description too short")
    (count,) = struct.unpack_from("!H", body)
    i = 2
    out: list[Column] = []
    for _ in range(count):
        name, i = cstring(body, i)
        if i + 18 > len(body):
            raise WireError("row description field too short")
        _table, _attr, oid, _size, _mod, fmt = struct.unpack_from("!IhIhih", body, i)
        i += 18
        out.append(Column(name, oid, fmt))
    return tuple(out)


def _values(body: bytes) -> list[bytes | None]:
    if len(body) < 2:
        raise WireError("data row too short")
    (count,) = struct.unpack_from("!H", body)
    i = 2
    out: list[bytes | None] = []
    for _ in range(count):
        if i + 4 > len(body):
            raise WireError("data row value too short")
        (n,) = struct.unpack_from("!i", body, i)
        i += 4
        if n < 0:
            out.append(None)
            continue
        if i + n > len(body):
            raise WireError("data row value past its end")
        out.append(body[i : i + n])
        i += n
    if i != len(body):
        raise WireError("data row has bytes after its values")
    return out


def _row(values: Sequence[bytes | None]) -> bytes:
    parts = [struct.pack("!H", len(values))]
    for v in values:
        parts.append(struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v)
    return b"".join(parts)


def mask_row(
    scanner: Scanner, plan: actions.Plan, columns: Sequence[Column], body: bytes
) -> tuple[bytes, list[tuple[str, Finding]]]:
    """A DataRow ('D') body with its text-like values masked, and the findings by column name."""
    values = _values(body)
    if len(values) != len(columns):
        raise WireError("data row does not match its row description")
    found: list[tuple[str, Finding]] = []
    changed = False
    scan = [(k, v) for k, (c, v) in enumerate(zip(columns, values, strict=True)) if c.scanned and v]
    if not scan or not scanner.may_find([v for _, v in scan if v], pii=plan.pii_types):
        return body, found
    for k, value in scan:
        assert value is not None
        column = columns[k]
        head = b""
        if column.type_oid == JSONB_OID and value[:1] == _JSONB_VERSION:  # binary jsonb: version byte, then text
            head, value = value[:1], value[1:]
        json_text = column.type_oid in (JSON_OID, JSONB_OID)
        result = scanner.scan(value, pii=plan.pii_types, json_strings=json_text)
        if not result.edits:
            continue
        found.extend((column.name, f) for f in result.findings)
        values[k] = head + result.masked(value)
        changed = True
    return (_row(values) if changed else body), found
