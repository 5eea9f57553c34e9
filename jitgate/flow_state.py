"""What the gateway knows about one flow, as one typed value shared by the checks.

Every check of the HTTP chain (and any other protocol's listener) reads and writes one
`FlowState` per request: the verified claims, the connection, the operation and collection, the
findings, the decision, the error code. It lives in memory beside the flow (addon/meta.py
`state_of`); its plain form (`plain`, JSON-ready data under the `jitgate.*` keys) is written once,
when the flow ends, for mitmproxy's flow files (`mitmdump -w`), and `from_plain` reads it back.
The injected upstream credential and the other working values (a stream masker, the spool
reservation) are never in the plain form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from jitgate.policy import Connection, Policy
from jitgate.records import Decision, Finding
from jitgate.token import Claims

Side = Literal["request", "response"]
_SIDES: tuple[Side, ...] = ("request", "response")

# The keys of the plain form (`flow.metadata` of a finished flow, a flow file).
CLAIMS = "jitgate.claims"  # dict: JSON form of the verified Claims
TOKEN_HASH = "jitgate.token_sha256"  # hex SHA-256 of the token (never the token itself)
CONNECTION = "jitgate.connection"  # str: the connection's name
OPERATION = "jitgate.operation"  # str: the named operation scope_guard matched
COLLECTION = "jitgate.collection"  # str: the store collection (its name, never an id)
STORE_DATABASE = "jitgate.store_database"  # [tenant, database] of a Chroma call (str | None each)
FINDINGS = "jitgate.findings"  # list[dict]: each records.Finding.plain() ({type, where, action, tag, ...})
DECISION = "jitgate.decision"  # str: a records.Decision
ERROR = "jitgate.error"  # str: the stable error code when the gateway answered the flow itself
INJECTED = "jitgate.injected"  # True once the upstream credential was set on the request
INSPECTED = "jitgate.inspected"  # list[str]: sides whose body is masked as it stands
HOLD = "jitgate.hold"  # str: the approval id of a held flow


@dataclass(eq=False)
class FlowState:
    """One flow's state; every field has one writer (named beside it) and any reader."""

    claims: Claims | None = None  # token_gate: the verified token's claims
    token_sha256: str | None = None  # token_gate
    connection: Connection | None = None  # scope_guard: the token's connection serving this host
    host_dialect: str | None = None  # token_gate: the dialect of every connection serving the host, if one
    connection_name: str | None = None  # the connection's name (alone in a state read back from plain)
    operation: str | None = None  # scope_guard
    collection: str | None = None  # scope_guard
    tenant: str | None = None  # scope_guard: a Chroma call's tenant
    database: str | None = None  # scope_guard: a Chroma call's database
    findings: list[Finding] = field(default_factory=list)  # leak_guard: what the inspection found
    decision: Decision | None = None  # the last check that decided (blocked, masked, held, ...)
    error: str | None = None  # the stable code of the gateway's own answer (respond.refuse)
    inspected: list[Side] = field(default_factory=list)  # leak_guard: sides masked as they stand
    buffer_response: bool = False  # scope_guard: the answer is checked whole (field filter), never streamed
    hold_id: str | None = None  # approval_hold
    injected: bool = False  # credential_inject
    # credential_inject: the upstream credential it set, in memory only (never plain, logged or
    # recorded); leak_guard always finds it in responses, whatever its format.
    injected_secret: str | None = field(default=None, repr=False)
    credential_retried: bool = False  # credential_retry: a 401 was retried once
    stream: object | None = field(default=None, repr=False)  # leak_guard: the masker of a streamed answer
    spool_reserved: int = 0  # session_recorder: bytes of spool quota held for this flow's record
    audit_checked: bool = False  # session_recorder: its request hook let this flow through
    recorded: bool = False  # session_recorder: the record was taken (one per flow)

    def use_connection(self, conn: Connection) -> None:
        self.connection, self.connection_name = conn, conn.name

    def connection_in(self, policy: Policy | None) -> Connection | None:
        """The flow's connection; a state read back from plain data looks it up in `policy`."""
        if self.connection is None and self.connection_name is not None and policy is not None:
            self.connection = policy.connections.get(self.connection_name)
        return self.connection

    @property
    def dialect(self) -> str | None:
        """The dialect whose error shape the gateway's refusals take: the connection's, else the host's."""
        return self.connection.dialect if self.connection is not None else self.host_dialect

    def decide(self, decision: Decision) -> None:
        """Set the decision unless an earlier check set one (a held flow stays `denied`)."""
        if self.decision is None:
            self.decision = decision

    def mark_inspected(self, side: Side) -> None:
        if side not in self.inspected:
            self.inspected.append(side)

    def plain(self) -> dict[str, Any]:
        """The JSON-ready form for flow files: only what is set, never the credential."""
        values: dict[str, Any] = {
            CLAIMS: self.claims.model_dump(mode="json") if self.claims is not None else None,
            TOKEN_HASH: self.token_sha256,
            CONNECTION: self.connection_name,
            OPERATION: self.operation,
            COLLECTION: self.collection,
            STORE_DATABASE: [self.tenant, self.database] if self.tenant or self.database else None,
            FINDINGS: [f.plain() for f in self.findings] or None,
            DECISION: str(self.decision) if self.decision is not None else None,
            ERROR: self.error,
            INJECTED: self.injected or None,
            INSPECTED: list(self.inspected) or None,
            HOLD: self.hold_id,
        }
        return {k: v for k, v in values.items() if v is not None}

    @classmethod
    def from_plain(cls, data: Mapping[str, Any]) -> FlowState:
        """The state of a flow read back (a flow file, a copy); a malformed value reads as unset."""
        state = cls()
        if not data:
            return state
        claims = data.get(CLAIMS)
        if isinstance(claims, dict):
            try:
                state.claims = Claims.model_validate(claims)
            except ValueError:
                state.claims = None
        state.token_sha256 = _str(data.get(TOKEN_HASH))
        state.connection_name = _str(data.get(CONNECTION))
        state.operation = _str(data.get(OPERATION))
        state.collection = _str(data.get(COLLECTION))
        store_db = data.get(STORE_DATABASE)
        if isinstance(store_db, list) and len(store_db) == 2:
            state.tenant, state.database = _str(store_db[0]), _str(store_db[1])
        findings = data.get(FINDINGS)
        if isinstance(findings, list):
            read = (Finding.from_plain(f) for f in findings if isinstance(f, dict))
            state.findings = [f for f in read if f is not None]
        decision = data.get(DECISION)
        if decision in {d.value for d in Decision}:
            state.decision = Decision(decision)
        state.error = _str(data.get(ERROR))
        state.injected = data.get(INJECTED) is True
        inspected = data.get(INSPECTED)
        if isinstance(inspected, list):
            state.inspected = [side for side in _SIDES if side in inspected]
        state.hold_id = _str(data.get(HOLD))
        return state


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
