"""Suite-wide isolation between tests that use the e2e moto server and the rest.

tests/e2e's session fixture `moto_server` points boto3 at a moto server through the process
environment (AWS_ENDPOINT_URL) until the session ends. Unit tests that run later use moto's
in-process `mock_aws`, which does not intercept calls to a custom endpoint; so for every test
that does not use `moto_server` (directly or through another fixture) the variable is removed
for the duration of the test.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_moto_server_endpoint_unless_used(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if "moto_server" not in request.fixturenames:
        monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
