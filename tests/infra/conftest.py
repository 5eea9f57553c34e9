"""The deployed gateway's real-process tests reuse the e2e session's real parts (moto server, OIDC issuer,
broker), as the reliability tests do."""

from __future__ import annotations

from tests.reliability.conftest import *  # noqa: F403  (the fixtures, by their __all__)
