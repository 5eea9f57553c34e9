"""Keys of `flow.metadata` the addons share, and the rule that keeps the chain fail-closed.

Chain order (addon/jitgate_addons.py): token_gate → scope_guard → leak_guard → approval_hold →
credential_inject → (upstream) → leak_guard (response) → session_recorder.

mitmproxy calls every addon's `request` hook even after one of them answered the flow, so each
request hook starts with `if refused(flow): return`. A refused flow still reaches the
`response` hooks, so the recorder records refusals like any other flow.
"""

from __future__ import annotations

from mitmproxy import http

CLAIMS = "jitgate.claims"  # jitgate.token.Claims of the verified token
TOKEN_HASH = "jitgate.token_sha256"  # hex SHA-256 of the token (never the token itself)
CONNECTION = "jitgate.connection"  # jitgate.policy.Connection the request belongs to
OPERATION = "jitgate.operation"  # named operation (str) matched by scope_guard
COLLECTION = "jitgate.collection"  # store collection (str | None)
FINDINGS = "jitgate.findings"  # list[dict]: {type, where, action, tag} from leak_guard
DECISION = "jitgate.decision"  # allowed | blocked | masked | held | approved | denied
ERROR = "jitgate.error"  # stable error code when the gateway answered the flow itself
INJECTED = "jitgate.injected"  # True once credential_inject set the upstream credential
STARTED = "jitgate.started"  # monotonic time the request entered the chain
# str: the upstream credential credential_inject set, in memory only (never recorded or logged);
# leak_guard always detects it in responses, whatever its format.
INJECTED_SECRET = "jitgate.injected_secret"


def refused(flow: http.HTTPFlow) -> bool:
    """True when an earlier addon already answered this flow."""
    return flow.response is not None or ERROR in flow.metadata
