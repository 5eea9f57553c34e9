"""Suite-wide isolation between the end-to-end tests and the rest.

tests/e2e's session fixture `moto_server` points boto3 at a moto server through the process
environment (AWS_ENDPOINT_URL) until the session ends. Unit tests that run later use moto's
in-process `mock_aws`, which does not intercept calls to a custom endpoint; so outside
tests/e2e the variable is removed for the duration of each test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_E2E = Path(__file__).parent / "e2e"


@pytest.fixture(autouse=True)
def _no_moto_server_endpoint_outside_e2e(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if _E2E not in Path(str(request.node.path)).parents:
        monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
