"""What the gateway does with findings, per masking profile and direction.

Secrets in a request block by default (the 403 lists types and locations, never a value);
PII in a request is masked, or blocked, per profile; secrets and PII in a response are masked.
`review` is not something this layer can hold for, so it fails closed as a block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from jitgate.inspect.masking import Finding
from jitgate.policy import MaskProfile

Direction = Literal["request", "response"]
Action = Literal["block", "mask", "allow"]


@dataclass(frozen=True)
class Plan:
    """The scan to run and the action for each kind of finding."""

    pii_types: frozenset[str]
    secrets: Action
    pii: Action


def plan(profile: MaskProfile, direction: Direction) -> Plan:
    if direction == "request":
        secrets: Action = "mask" if profile.request_secrets == "mask" else "block"
        pii: Action = {"mask": "mask", "allow": "allow"}.get(profile.request_pii, "block")  # type: ignore[assignment]
    else:
        secrets = "mask" if profile.response_secrets == "mask" else "allow"
        pii = "mask" if profile.response_pii == "mask" else "allow"
    types = frozenset(profile.pii_types) if pii != "allow" else frozenset()
    return Plan(types, secrets, pii)


def action_for(p: Plan, finding: Finding) -> Action:
    return p.secrets if finding.kind == "secret" else p.pii


def decide(p: Plan, findings: Sequence[Finding]) -> Action:
    """block if any finding blocks, else mask if any is masked, else allow."""
    actions = {action_for(p, f) for f in findings}
    if "block" in actions:
        return "block"
    return "mask" if "mask" in actions else "allow"
