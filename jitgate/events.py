"""Token events: what the broker writes to S3 for every issuance, denial, revocation and decision.

One JSON object per line under `token-events/dt=YYYY-MM-DD/`. The Glue table `token_events`
in template.yaml declares exactly `glue_columns()`; a test keeps the two in step. An event
never carries a token, a secret or an unverified claim.
"""

from __future__ import annotations

import types
import typing
import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

EVENT_PREFIX = "token-events"
EventType = Literal[
    "issued", "denied", "revoked", "approval_decided", "approval_requested", "approval_expired"
]


class TokenEvent(BaseModel):
    """One token event; `None` fields are written as JSON null so every line has every column.

Column names avoid Athena's reserved words (`time`, `grant`), so queries need no quoting.
"""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    event_time: str  # ISO-8601 UTC with milliseconds
    event_type: EventType
    broker: str  # the broker's issuer URL
    status: int  # HTTP status the broker answered
    route: str | None = None  # "METHOD /path" of the request (a denial says what was refused)
    code: str | None = None  # stable error code of a denial
    request_id: str | None = None
    source_ip: str | None = None
    user_agent: str | None = Field(default=None, max_length=256)
    oidc_issuer: str | None = None  # only once the identity token verified
    sub: str | None = None
    jti: str | None = None
    conn: str | None = None
    operations: list[str] = Field(default_factory=list)
    grant_name: str | None = None
    ttl: int | None = None
    requested_ttl: int | None = None
    clamped: bool | None = None
    expires_at: int | None = None
    mask: str | None = None
    kid: str | None = None
    job: str | None = None
    purpose: str | None = None
    apv: str | None = None
    actor: str | None = None  # who revoked or decided, when not the subject

    @property
    def date(self) -> str:
        return self.event_time[:10]

    def line(self) -> str:
        return self.model_dump_json() + "\n"


def iso_time(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(now * 1000) % 1000:03d}Z"


def object_key(event: TokenEvent) -> str:
    """Hive-partitioned, unique and sortable: `token-events/dt=YYYY-MM-DD/HHMMSS.mmm-<event_id>.jsonl`."""
    clock = event.event_time[11:23].replace(":", "")
    return f"{EVENT_PREFIX}/dt={event.date}/{clock}-{event.event_id}.jsonl"


_HIVE = {str: "string", int: "bigint", bool: "boolean", float: "double"}


def _hive_type(annotation: object) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _hive_type(inner)
    if origin is Literal:
        return "string"
    if origin is list:
        (item,) = typing.get_args(annotation)
        return f"array<{_hive_type(item)}>"
    if isinstance(annotation, type) and annotation in _HIVE:
        return _HIVE[annotation]
    raise TypeError(f"no Hive type for {annotation!r}")


def glue_columns() -> list[tuple[str, str]]:
    """(name, Hive type) of every TokenEvent field, in order; `dt` is the partition key."""
    hints = typing.get_type_hints(TokenEvent)
    return [(name, _hive_type(hints[name])) for name in TokenEvent.model_fields]
