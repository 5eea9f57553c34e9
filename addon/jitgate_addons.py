"""The jitgate addon chain, for `mitmdump -s addon/jitgate_addons.py`.

Order matters (DESIGN.md, addon/meta.py): each request hook skips flows an earlier addon
answered; response hooks run in the same order. The marked places are filled by the engineers
who own those addons; until then the chain runs without them.
"""

from __future__ import annotations

from addon.approval_hold import ApprovalHold
from addon.credential_inject import CredentialInject
from addon.leak_guard import LeakGuard
from addon.scope_guard import ScopeGuard
from addon.session_recorder import SessionRecorder
from addon.token_gate import TokenGate

token_gate = TokenGate()
scope_guard = ScopeGuard()
leak_guard = LeakGuard()
approval_hold = ApprovalHold()
credential_inject = CredentialInject()
session_recorder = SessionRecorder()

addons = [token_gate, scope_guard, leak_guard, approval_hold, credential_inject, session_recorder]
