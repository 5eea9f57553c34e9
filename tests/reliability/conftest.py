"""Faults under load: the e2e session's real parts (moto server, OIDC issuer, broker) are reused."""

from __future__ import annotations

from tests.e2e.conftest import (
    aws_stack,
    broker,
    broker_process,
    mint,
    moto_server,
    oidc_issuer,
    policy_path,
    test_policy,
)

__all__ = [
    "aws_stack", "broker", "broker_process", "mint", "moto_server", "oidc_issuer", "policy_path", "test_policy",
]
