"""The one accessor of a flow's state (`state_of`), and the rule that keeps the chain fail-closed.

Every addon reads and writes a flow's `jitgate.flow_state.FlowState` through `state_of(flow)`:
typed values, held beside the flow (not in `flow.metadata`), so a flow file or `flow.copy()`
never sees the parsed objects or the injected credential. `publish(flow)` writes the state's
plain form into `flow.metadata` once, when the flow ends (addon/flow_metadata.py), for
mitmproxy's flow files; a flow read back from one (or copied) gets its state from that form.

Chain order (addon/jitgate_addons.py): token_gate → scope_guard → leak_guard → approval_hold →
credential_inject → (upstream) → leak_guard (response) → session_recorder.

mitmproxy calls every addon's `request` hook even after one of them answered the flow, so each
request hook starts with `if refused(flow): return`. A refused flow still reaches the
`response` hooks, so the recorder records refusals like any other flow.
"""

from __future__ import annotations

import weakref

from mitmproxy import http

from jitgate.flow_state import FlowState

# flow -> its state; dropped with the flow.
_states: weakref.WeakKeyDictionary[http.HTTPFlow, FlowState] = weakref.WeakKeyDictionary()


def state_of(flow: http.HTTPFlow) -> FlowState:
    """The state of `flow`, made on first use (from the plain form a flow file or copy holds)."""
    state = _states.get(flow)
    if state is None:
        state = _states[flow] = FlowState.from_plain(flow.metadata)
    return state


def refused(flow: http.HTTPFlow) -> bool:
    """True when an earlier addon already answered this flow."""
    return flow.response is not None or state_of(flow).error is not None


def publish(flow: http.HTTPFlow) -> None:
    """Write the state's plain form into `flow.metadata` (for flow files), replacing an older one."""
    flow.metadata.update(state_of(flow).plain())


def live() -> list[http.HTTPFlow]:
    """The flows that have a state now (those in flight when the gateway stops)."""
    return list(_states.keys())
