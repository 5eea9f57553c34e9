"""FlowLog: one line per flow the gateway refused, masked, held or that failed, its decision as the
record says it (jitgate.records.decision_of), and none for a flow allowed as asked."""

from __future__ import annotations

import logging

import pytest
from mitmproxy.test import tflow

from addon import meta
from addon.log_json import FlowLog
from jitgate.records import Decision


def _logged(caplog: pytest.LogCaptureFixture, decision: Decision | None, code: str | None) -> list[logging.LogRecord]:
    flow = tflow.tflow(resp=True)
    state = meta.state_of(flow)
    state.decision, state.error = decision, code
    with caplog.at_level(logging.INFO, logger="addon.log_json"):
        FlowLog().response(flow)
    return [r for r in caplog.records if r.name == "addon.log_json"]


@pytest.mark.parametrize(
    ("decision", "code", "logged"),
    [
        (None, None, None),
        (Decision.ALLOWED, None, None),
        (None, "leak_blocked", "blocked"),
        (Decision.MASKED, None, "masked"),
        (Decision.DENIED, "approval_denied", "denied"),
        (Decision.ALLOWED, "upstream_timeout", "allowed"),
    ],
)
def test_a_flow_is_logged_with_its_recorded_decision(
    caplog: pytest.LogCaptureFixture, decision: Decision | None, code: str | None, logged: str | None
) -> None:
    lines = _logged(caplog, decision, code)
    if logged is None:
        assert lines == []
    else:
        (line,) = lines
        fields = vars(line)
        assert fields["decision"] == logged and type(fields["decision"]) is str  # the value, not the enum
        assert fields["code"] == code
