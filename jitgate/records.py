"""The session record: one per flow, one field per column of the Glue table `sessions`.

`COLUMNS` is the single source of the column names and types; the writer (the recorder), the
Glue table in `template.yaml` (checked by a test) and the DuckDB reader (`jitgate audit`) all
follow it. docs/audit.md documents every field. `dt` and `hour` are not fields: they are the
Hive partitions of the object key (`sessions/dt=YYYY-MM-DD/hour=HH/...`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypedDict, overload

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Decision(StrEnum):
    """What the gateway did with a flow, as its record says (`decision`)."""

    ALLOWED = "allowed"  # forwarded as asked
    BLOCKED = "blocked"  # refused by a check, or cut
    MASKED = "masked"  # forwarded or answered with findings masked
    HELD = "held"  # waiting for an approver (a record of a flow that ended while held)
    APPROVED = "approved"  # held, approved, forwarded
    DENIED = "denied"  # held (or to be held) and not forwarded: denied, timed out, or no hold possible


DECISIONS = tuple(d.value for d in Decision)


def decision_of(decided: Decision | None, error: str | None) -> Decision:
    """The decision a flow ends with: the one a check set, else `blocked` when it ended with an
    error code (the gateway refused it, or it failed), else `allowed`."""
    if decided is not None:
        return decided
    return Decision.BLOCKED if error else Decision.ALLOWED

# (name, Glue/Hive type), in record order. Nested struct field names avoid SQL keywords.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("record_id", "string"),
    ("ts", "string"),
    ("gateway", "string"),
    ("flow_id", "string"),
    ("jti", "string"),
    ("sub", "string"),
    ("conn", "string"),
    ("job", "string"),
    ("apv", "string"),
    ("token_sha256", "string"),
    ("client", "string"),
    ("method", "string"),
    ("host", "string"),
    ("path", "string"),
    ("operation", "string"),
    ("collection", "string"),
    ("tenant", "string"),
    ("database", "string"),
    ("status", "int"),
    ("request_bytes", "bigint"),
    ("response_bytes", "bigint"),
    ("latency_ms", "double"),
    ("decision", "string"),
    ("error", "string"),
    ("findings", "array<struct<type:string,kind:string,location:string,action:string,tag:string>>"),
    ("rerank_query", "string"),
    ("doc_count", "int"),
    ("doc_sha256", "array<string>"),
    ("ranking", "array<struct<index:int,score:double>>"),
    ("embeddings", "array<struct<location:string,dim:int,sha256:string>>"),
    ("request_body", "string"),
    ("response_body", "string"),
    ("truncated", "boolean"),
    # The Postgres path (null / empty on HTTP records): the startup's user name, the tables and
    # schema.table.column names a statement touched, its text with literals removed, its pglast
    # fingerprint, and the rows it returned.
    ("db_user", "string"),
    ("tables", "array<string>"),
    ("columns", "array<string>"),
    ("statement", "string"),
    ("statement_fingerprint", "string"),
    ("rows", "bigint"),
    # Per result column and finding type, counted over all a statement's rows (`findings` keeps its first 100).
    ("column_findings", "array<struct<column_name:string,type:string,kind:string,action:string,count:bigint>>"),
    # A held request or statement (both paths): the hold's approval id; `decision` says how it ended
    # (approved, denied; a timeout is denied with error approval_timeout).
    ("approval_id", "string"),
)

PARTITIONS: tuple[tuple[str, str], ...] = (("dt", "string"), ("hour", "string"))


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Finding(_Frozen):
    """One finding of the inspection, never the value: the one type for it on every path.

    leak_guard and the Postgres listener make it, the flow state keeps it (`plain` in flow files),
    a 403 lists its `public` part, the approval rules judge its `action`, the metrics count its
    `type`, and the record writes its columns: detector type, kind, location, action and keyed tag
    (a short HMAC of the value under the gateway's key: the same secret correlates across records
    without being revealed). Where it sat in the scanned text (`path` in a JSON body, `offset`,
    `length`, `encoding`) is kept for the answer and the flow file, never written to the record.
    """

    type: str
    kind: str | None = None
    location: str
    action: str
    tag: str | None = None
    path: str | None = Field(default=None, exclude=True)
    offset: int | None = Field(default=None, exclude=True)
    length: int | None = Field(default=None, exclude=True)
    encoding: str | None = Field(default=None, exclude=True)

    def public(self) -> dict[str, Any]:
        """What a 403 tells the caller: type and place (never the value)."""
        values = {"type": self.type, "where": self.location, "path": self.path, "offset": self.offset,
                  "length": self.length, "tag": self.tag}
        return {k: v for k, v in values.items() if v is not None or k in ("type", "where")}

    def plain(self) -> dict[str, Any]:
        """The JSON form a flow file keeps (`where` for the location, as leak_guard's answers say)."""
        values = {"path": self.path, "type": self.type, "kind": self.kind, "where": self.location,
                  "offset": self.offset, "length": self.length, "encoding": self.encoding, "action": self.action,
                  "tag": self.tag}
        return {k: v for k, v in values.items() if v is not None}

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> Finding | None:
        """The finding of a `plain` form read back; None when it is none."""
        try:
            return cls(
                type=data["type"], kind=data.get("kind"), location=data["where"], action=data["action"],
                tag=data.get("tag"), path=data.get("path"), offset=data.get("offset"), length=data.get("length"),
                encoding=data.get("encoding"),
            )
        except (KeyError, TypeError, ValueError):
            return None


class ColumnFinding(_Frozen):
    """The findings of one kind in one result column of a statement (Postgres), counted over all its rows.

    `type` is a detector's, or `column` for a value masked whole by the grant's `mask_columns`.
    """

    column_name: str
    type: str
    kind: str | None = None
    action: str
    count: int


class RankEntry(TypedDict):
    """One result of a rerank answer: the index of the document in the request and its score.

    A TypedDict, not a model: a record holds up to hundreds of them, and pydantic-core checks a
    TypedDict without the Python-level instance check a model costs per entry (~1 µs each).
    """

    index: int
    score: float | None


class VectorDigest(_Frozen):
    """An embedding vector replaced by its dimension and the SHA-256 of its JSON text."""

    location: str
    dim: int
    sha256: str


class SessionRecord(_Frozen):
    """One flow through the gateway, after masking. Never a raw secret, credential or vector."""

    record_id: str
    ts: str
    gateway: str
    flow_id: str
    jti: str | None = None
    sub: str | None = None
    conn: str | None = None
    job: str | None = None
    apv: str | None = None
    token_sha256: str | None = None
    client: str | None = None
    method: str
    host: str
    path: str
    operation: str | None = None
    collection: str | None = None
    tenant: str | None = None  # a store call's tenant and database (Chroma), as its path named them
    database: str | None = None
    status: int = 0
    request_bytes: int = 0
    response_bytes: int = 0
    latency_ms: float | None = None
    decision: str = Decision.ALLOWED
    error: str | None = None
    findings: tuple[Finding, ...] = ()
    rerank_query: str | None = None
    doc_count: int | None = None
    doc_sha256: tuple[str, ...] = ()
    ranking: tuple[RankEntry, ...] = ()
    embeddings: tuple[VectorDigest, ...] = ()
    request_body: str | None = None
    response_body: str | None = None
    truncated: bool = False
    db_user: str | None = None
    tables: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    statement: str | None = None
    statement_fingerprint: str | None = None
    rows: int | None = None
    column_findings: tuple[ColumnFinding, ...] = ()
    approval_id: str | None = None

    @field_validator(
        "sub", "job", "client", "host", "path", "operation", "collection", "rerank_query", "request_body",
        "response_body", "db_user", "statement",
    )
    @classmethod
    def _no_lone_surrogates(cls, value: str | None) -> str | None:
        return escape_text(value)

    def to_json_line(self) -> bytes:
        """One JSON line, every column present (null when unknown) so readers see one shape.

        pydantic's own serializer writes the same compact UTF-8 JSON as `json.dumps(...,
        separators=(",", ":"), ensure_ascii=False)` several times faster (a non-finite score is
        written as null, which JSON readers accept, where json.dumps would write NaN).
        """
        return self.model_dump_json().encode() + b"\n"


@overload
def escape_text(value: str) -> str: ...
@overload
def escape_text(value: None) -> None: ...
def escape_text(value: str | None) -> str | None:
    """`escape_surrogates` of a text field that may be unknown (None)."""
    return None if value is None else escape_surrogates(value)


def escape_surrogates(text: str) -> str:
    """`text` with each lone surrogate written as its escape (`\\ud800`).

    Text from the wire can hold them (JSON allows a `\\ud800` escape; mitmproxy decodes bytes
    that are no UTF-8 to them); UTF-8 cannot encode them, and a record must still be written.
    """
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def record_id(gateway: str, flow_id: str) -> str:
    """Stable per flow: the same flow shipped twice carries the same id, so queries can drop it."""
    return hashlib.sha256(f"{gateway}\x00{flow_id}".encode()).hexdigest()[:32]


def iso_ts(epoch: float) -> str:
    """UTC ISO 8601 with milliseconds and `Z`: sorts as text, parses in Athena and DuckDB."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# ---- the same columns for DuckDB ---------------------------------------------------------

_SCALARS = {"string": "VARCHAR", "int": "INTEGER", "bigint": "BIGINT", "double": "DOUBLE", "boolean": "BOOLEAN"}
_STRUCT_FIELD = re.compile(r"([a-z_]+):([a-z]+)")


def duckdb_type(glue_type: str) -> str:
    """Translate the Hive types used in `COLUMNS` (scalars, arrays of scalars or flat structs)."""
    if glue_type in _SCALARS:
        return _SCALARS[glue_type]
    if glue_type.startswith("array<") and glue_type.endswith(">"):
        return duckdb_type(glue_type[len("array<") : -1]) + "[]"
    if glue_type.startswith("struct<") and glue_type.endswith(">"):
        fields = _STRUCT_FIELD.findall(glue_type[len("struct<") : -1])
        return "STRUCT(" + ", ".join(f'"{n}" {_SCALARS[t]}' for n, t in fields) + ")"
    raise ValueError(f"unsupported column type {glue_type!r}")


def duckdb_columns(columns: tuple[tuple[str, str], ...] = COLUMNS) -> dict[str, str]:
    return {name: duckdb_type(t) for name, t in columns}


def model_field_names() -> tuple[str, ...]:
    return tuple(SessionRecord.model_fields)
