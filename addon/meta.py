"""Keys of `flow.metadata` the addons share, and the rule that keeps the chain fail-closed.

Every value stored under these keys is plain data (str, int, float, bool, None, list, dict), so
mitmproxy can deep-copy a flow and write it to a flow file (`mitmdump -w`, mitmweb "save").
The verified claims and the connection are stored as their JSON form / name; `claims(flow)` and
`connection(flow, policy)` hand back the parsed objects, parsed once per flow and cached beside
it (not in it). The injected credential is only ever held in memory and dropped before the
flow is written (credential_inject `forget`).

Chain order (addon/jitgate_addons.py): token_gate → scope_guard → leak_guard → approval_hold →
credential_inject → (upstream) → leak_guard (response) → session_recorder.

mitmproxy calls every addon's `request` hook even after one of them answered the flow, so each
request hook starts with `if refused(flow): return`. A refused flow still reaches the
`response` hooks, so the recorder records refusals like any other flow.
"""

from __future__ import annotations

import weakref
from typing import Any

from mitmproxy import http

from jitgate.policy import Connection, Policy
from jitgate.token import Claims

CLAIMS = "jitgate.claims"  # dict: JSON form of the verified jitgate.token.Claims (read with `claims`)
TOKEN_HASH = "jitgate.token_sha256"  # hex SHA-256 of the token (never the token itself)
CONNECTION = "jitgate.connection"  # str: name of the Connection the request belongs to (`connection`)
OPERATION = "jitgate.operation"  # named operation (str) matched by scope_guard
COLLECTION = "jitgate.collection"  # store collection (str | None)
FINDINGS = "jitgate.findings"  # list[dict]: {type, where, action, tag} from leak_guard
DECISION = "jitgate.decision"  # allowed | blocked | masked | held | approved | denied
ERROR = "jitgate.error"  # stable error code when the gateway answered the flow itself
INJECTED = "jitgate.injected"  # True once credential_inject set the upstream credential
INSPECTED = "jitgate.inspected"  # list[str]: sides ("request", "response") whose body leak_guard masked as it stands
BUFFER_RESPONSE = "jitgate.buffer_response"  # True: the answer is checked whole (store field filter), never streamed
# str: the upstream credential credential_inject set, in memory only (never recorded or logged);
# leak_guard always detects it in responses, whatever its format.
INJECTED_SECRET = "jitgate.injected_secret"


def refused(flow: http.HTTPFlow) -> bool:
    """True when an earlier addon already answered this flow."""
    return flow.response is not None or ERROR in flow.metadata


# flow -> (the metadata value it was parsed from, the parsed object); beside the flow, so a flow
# file or `flow.copy()` never sees it, and dropped with the flow.
_claims_cache: weakref.WeakKeyDictionary[http.HTTPFlow, tuple[Any, Claims]] = weakref.WeakKeyDictionary()
_conn_cache: weakref.WeakKeyDictionary[http.HTTPFlow, tuple[Any, Connection]] = weakref.WeakKeyDictionary()


def set_claims(flow: http.HTTPFlow, claims: Claims) -> None:
    """Store the verified claims as plain data; `claims(flow)` returns this object without re-parsing."""
    plain = claims.model_dump(mode="json")
    flow.metadata[CLAIMS] = plain
    _claims_cache[flow] = (plain, claims)


def claims(flow: http.HTTPFlow) -> Claims | None:
    """The verified claims of `flow`, or None (no verified token, or a value that is no claims)."""
    value = flow.metadata.get(CLAIMS)
    if value is None:
        return None
    if isinstance(value, Claims):
        return value
    hit = _claims_cache.get(flow)
    if hit is not None and hit[0] is value:
        return hit[1]
    if not isinstance(value, dict):
        return None
    try:
        parsed = Claims.model_validate(value)  # a flow read back from a file, or a copy
    except ValueError:
        return None
    _claims_cache[flow] = (value, parsed)
    return parsed


def set_connection(flow: http.HTTPFlow, conn: Connection) -> None:
    """Store the connection by name; `connection(flow, ...)` returns this object."""
    flow.metadata[CONNECTION] = conn.name
    _conn_cache[flow] = (conn.name, conn)


def connection_name(flow: http.HTTPFlow) -> str | None:
    value = flow.metadata.get(CONNECTION)
    if isinstance(value, Connection):
        return value.name
    return value if isinstance(value, str) else None


def connection(flow: http.HTTPFlow, policy: Policy | None) -> Connection | None:
    """The Connection scope_guard matched for `flow` (looked up in `policy` when not cached)."""
    value = flow.metadata.get(CONNECTION)
    if value is None:
        return None
    if isinstance(value, Connection):
        return value
    hit = _conn_cache.get(flow)
    if hit is not None and hit[0] == value:
        return hit[1]
    if not isinstance(value, str) or policy is None:
        return None
    conn = policy.connections.get(value)
    if conn is not None:
        _conn_cache[flow] = (value, conn)
    return conn
