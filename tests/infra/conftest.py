"""The deployed gateway's real-process tests reuse the e2e session's real parts (moto server, OIDC issuer,
broker), as the reliability tests do, and the deployed-gateway test's fixtures (a policy bucket, the
fleet CA, the mask key secret, the upstream)."""

from __future__ import annotations

from tests.e2e.test_deployed_gateway import fleet_ca, mask_secret, policy_bucket, upstream
from tests.reliability.conftest import *  # noqa: F403  (the fixtures, by their __all__)

__all__ = ["fleet_ca", "mask_secret", "policy_bucket", "upstream"]
