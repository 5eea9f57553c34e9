"""What the gateway does with findings, per masking profile and direction.

Secrets in a request block by default (the 403 lists types and locations, never a value);
PII in a request is masked, or blocked, per profile; secrets and PII in a response are masked.
`review` (requests only) masks like `mask` and marks the request for a human: the gateway's
approval_hold holds it until an approver decides. Without approval_hold in the chain, the
gateway treats `review` as `block` (fail closed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from jitgate.inspect.masking import Hit
from jitgate.policy import MaskProfile

Direction = Literal["request", "response"]
Action = Literal["block", "mask", "allow", "review"]


@dataclass(frozen=True)
class Plan:
    """The scan to run and the action for each kind of finding."""

    pii_types: frozenset[str]
    secrets: Action
    pii: Action


def plan(profile: MaskProfile, direction: Direction) -> Plan:
    if direction == "request":
        secrets: Action = {"mask": "mask", "review": "review"}.get(profile.request_secrets, "block")  # type: ignore[assignment]
        pii: Action = {"mask": "mask", "allow": "allow", "review": "review"}.get(  # type: ignore[assignment]
            profile.request_pii, "block"
        )
    else:
        secrets = "mask" if profile.response_secrets == "mask" else "allow"
        pii = "mask" if profile.response_pii == "mask" else "allow"
    # PII a profile lets pass is still looked for: its findings (action `allow`) keep the body it
    # sits in out of the session record (docs/audit.md), whatever the profile lets through.
    return Plan(frozenset(profile.pii_types), secrets, pii)


def action_for(p: Plan, finding: Hit) -> Action:
    return p.secrets if finding.kind == "secret" else p.pii


def decide(p: Plan, findings: Sequence[Hit]) -> Action:
    """block if any finding blocks, else review if any needs review, else mask if any is masked, else allow."""
    actions = {action_for(p, f) for f in findings}
    for action in ("block", "review", "mask"):
        if action in actions:
            return action
    return "allow"
