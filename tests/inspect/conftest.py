from __future__ import annotations

import secrets

import pytest

from jitgate.inspect import Scanner

KEY = secrets.token_bytes(32)


@pytest.fixture(scope="session", params=["hyperscan", "re"])
def scanner(request: pytest.FixtureRequest) -> Scanner:
    """Both engine paths: every test using this runs twice."""
    return Scanner(KEY, engine=request.param)


@pytest.fixture(scope="session")
def hs_scanner() -> Scanner:
    return Scanner(KEY, engine="hyperscan")


@pytest.fixture(scope="session")
def re_scanner() -> Scanner:
    return Scanner(KEY, engine="re")
