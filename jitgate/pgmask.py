"""Masking Postgres result rows: RowDescription says which columns hold text, DataRow values are scanned.

Pure code over message bodies. Text-like columns (text, varchar, char, name, json, jsonb) are
scanned by the inspection `Scanner` and masked per the connection's plan, in either result
format: their binary form is their UTF-8 text (jsonb's has a leading version byte, kept). Other
types (bytea, vector, numbers, ...) are never scanned as text. A DataRow keeps its number and
order of values; only the lengths of masked values change.

A grant's `mask_columns` name table columns masked whatever they hold. A RowDescription names the
table (oid) and attribute number each result column comes from, when it is a plain column (the
server follows subqueries and views to it); `masked_attributes` turns the names into those pairs
with one catalog query per session. A masked value becomes `[REDACTED:column:<tag>]` in a text-like
column (a JSON string of it in json / jsonb) and NULL in any other type, the one value every type
and format can hold. Where a masked column is used other than selected as it is, the statement is
refused (jitgate.pgsql), so no computed result column can carry it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from jitgate.inspect import Scanner, actions
from jitgate.inspect.masking import Hit
from jitgate.pgsql import allowed_columns
from jitgate.pgwire import WireError, cstring

TEXT_OIDS = frozenset({25, 1043, 1042, 19})  # text, varchar, bpchar, name
JSON_OID = 114
JSONB_OID = 3802
_JSONB_VERSION = b"\x01"
FORCED = "column"  # the finding type (and marker type) of a value masked by `mask_columns`


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    format: int  # 0 text, 1 binary
    table_oid: int = 0  # where the value comes from, when a plain table column (else 0)
    attnum: int = 0

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
        table, attr, oid, _size, _mod, fmt = struct.unpack_from("!IhIhih", body, i)
        i += 18
        out.append(Column(name, oid, fmt, table, attr))
    return tuple(out)


_COUNT = struct.Struct("!H").unpack_from
_LENGTH = struct.Struct("!i").unpack_from


def _values(body: bytes) -> list[bytes | None]:
    end = len(body)
    if end < 2:
        raise WireError("data row too short")
    (count,) = _COUNT(body)
    i = 2
    out: list[bytes | None] = []
    add = out.append
    for _ in range(count):
        if i + 4 > end:
            raise WireError("data row value too short")
        (n,) = _LENGTH(body, i)
        i += 4
        if n < 0:
            add(None)
            continue
        if i + n > end:
            raise WireError("data row value past its end")
        add(body[i : i + n])
        i += n
    if i != end:
        raise WireError("data row has bytes after its values")
    return out


def _row(values: Sequence[bytes | None]) -> bytes:
    parts = [struct.pack("!H", len(values))]
    for v in values:
        parts.append(struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v)
    return b"".join(parts)


_ATTRIBUTES = (
    "SELECT c.oid, a.attnum, n.nspname, c.relname, a.attname FROM pg_catalog.pg_attribute a"
    " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attname = ANY (ARRAY[{}]::pg_catalog.name[])"
)


def masked_attributes_query(mask_columns: Sequence[str]) -> str:
    """The catalog query for every table column named like one of `mask_columns` (its last part)."""
    names = sorted({c.rsplit(".", 1)[-1] for c in mask_columns})
    return _ATTRIBUTES.format(", ".join("'" + n.replace("'", "''") + "'" for n in names))  # policy-checked names


def masked_attributes(rows: Sequence[bytes], mask_columns: Sequence[str], schema: str) -> frozenset[tuple[int, int]]:
    """(table oid, attnum) of the columns `mask_columns` names, from the DataRow bodies of that query."""
    out: set[tuple[int, int]] = set()
    for body in rows:
        values = _values(body)
        if len(values) != 5 or any(v is None for v in values):
            raise WireError("unexpected catalog row")
        oid, attnum, nsp, rel, att = (v.decode("utf-8") for v in values if v is not None)
        if att in allowed_columns(f"{nsp}.{rel}", mask_columns, schema):
            out.add((int(oid), int(attnum)))
    return frozenset(out)


def forced_columns(columns: Sequence[Column], attributes: frozenset[tuple[int, int]]) -> frozenset[int]:
    """The indexes of the result columns that come from a masked table column."""
    return frozenset(k for k, c in enumerate(columns) if c.table_oid and (c.table_oid, c.attnum) in attributes)


def _forced_value(column: Column, value: bytes, tag: str) -> bytes | None:
    marker = b"[REDACTED:%s:%s]" % (FORCED.encode(), tag.encode())
    if column.type_oid in TEXT_OIDS:
        return marker
    if column.type_oid == JSON_OID:
        return b'"' + marker + b'"'
    if column.type_oid == JSONB_OID:
        return (_JSONB_VERSION if column.format == 1 else b"") + b'"' + marker + b'"'
    return None


@dataclass(frozen=True)
class RowShape:
    """What masking needs of one RowDescription: its columns, those masked whole (`forced`), and
    the text-like others that are scanned."""

    columns: tuple[Column, ...]
    forced: tuple[int, ...] = ()
    scanned: tuple[int, ...] = ()

    @classmethod
    def of(cls, columns: Sequence[Column], forced: frozenset[int] = frozenset()) -> RowShape:
        scanned = tuple(k for k, c in enumerate(columns) if c.scanned and k not in forced)
        return cls(tuple(columns), tuple(sorted(forced)), scanned)


class ShapeCache:
    """RowShapes by RowDescription body, for one session (its masked attributes fixed): a repeated
    statement's answer is not described again. Bounded: the oldest goes past `size` entries."""

    def __init__(self, attributes: frozenset[tuple[int, int]], size: int = 64) -> None:
        self.attributes = attributes
        self.size = size
        self._shapes: dict[bytes, RowShape] = {}

    def shape(self, description: bytes) -> RowShape:
        """The shape of a RowDescription ('T') body; raises WireError for one that cannot be read."""
        found = self._shapes.get(description)
        if found is None:
            columns = row_description(description)
            found = RowShape.of(columns, forced_columns(columns, self.attributes))
            if len(self._shapes) >= self.size:
                del self._shapes[next(iter(self._shapes))]
            self._shapes[description] = found
        return found


def mask_rows(
    scanner: Scanner,
    plan: actions.Plan,
    shape: RowShape,
    bodies: Sequence[bytes],
    *,
    tag: Callable[[bytes], str] | None = None,
) -> list[tuple[bytes, list[tuple[str, Hit]]]]:
    """DataRow ('D') bodies of one answer with their text-like values masked, and the findings
    of each by column name; a body without a change is returned as it came.

    One scanner pass (`may_find_each`) over the scanned values of all the rows says which may
    hold a finding; only those are scanned alone. The values at `shape.forced` are masked
    whatever they hold, tagged by `tag` (a keyed HMAC of the value), with the type `FORCED`.
    """
    columns = shape.columns
    if shape.forced and tag is None:
        raise ValueError("forced columns need a tag function")
    rows = [_values(body) for body in bodies]
    out: list[tuple[bytes, list[tuple[str, Hit]]]] = [(body, []) for body in bodies]
    changed = [False] * len(rows)
    places: list[tuple[int, int]] = []
    texts: list[bytes] = []
    for r, values in enumerate(rows):
        if len(values) != len(columns):
            raise WireError("data row does not match its row description")
        for k in shape.forced:
            value = values[k]
            if value is not None and tag is not None:
                mark = tag(value)
                values[k] = _forced_value(columns[k], value, mark)
                out[r][1].append((columns[k].name, Hit(FORCED, "pii", 0, len(value), mark)))
                changed[r] = True
        for k in shape.scanned:
            value = values[k]
            if value:
                places.append((r, k))
                texts.append(value)
    flags = scanner.may_find_each(texts, pii=plan.pii_types) if texts else []
    for (r, k), value, flag in zip(places, texts, flags, strict=True):
        if not flag:
            continue
        column = columns[k]
        head = b""
        if column.type_oid == JSONB_OID and value[:1] == _JSONB_VERSION:  # binary jsonb: version byte, then text
            head, value = value[:1], value[1:]
        result = scanner.scan(value, pii=plan.pii_types, json_strings=column.type_oid in (JSON_OID, JSONB_OID))
        if result.edits:
            out[r][1].extend((column.name, f) for f in result.findings)
            rows[r][k] = head + result.masked(value)
            changed[r] = True
    return [(_row(rows[r]), found) if changed[r] else (body, found) for r, (body, found) in enumerate(out)]


def mask_row(
    scanner: Scanner,
    plan: actions.Plan,
    columns: Sequence[Column],
    body: bytes,
    *,
    forced: frozenset[int] = frozenset(),
    tag: Callable[[bytes], str] | None = None,
) -> tuple[bytes, list[tuple[str, Hit]]]:
    """One DataRow ('D') body masked (`mask_rows` of one row)."""
    return mask_rows(scanner, plan, RowShape.of(columns, forced), [body], tag=tag)[0]
