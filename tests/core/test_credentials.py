"""jitgate.credentials: where the upstream credential goes and how long a secret is used."""

from __future__ import annotations

import pytest

from jitgate import credentials
from jitgate.devstack.policy import policy_dict
from jitgate.dialects import CLIENT_CREDENTIAL_HEADERS
from jitgate.policy import Policy

POLICY = Policy.model_validate(policy_dict("https://issuer.test", upstreams={"cohere-test": "https://127.0.0.1:9443"}))
CONN = POLICY.connections["cohere-test"]


def test_the_credential_goes_in_the_connections_header_and_format() -> None:
    name, value = credentials.credential_header(CONN, "s3cret")
    assert name == CONN.credential.header and value == CONN.credential.format.replace("{secret}", "s3cret")
    stripped = credentials.stripped_headers(CONN)
    assert set(CLIENT_CREDENTIAL_HEADERS) <= set(stripped) and CONN.credential.header in stripped


def test_the_upstream_target_is_the_connections_real_one() -> None:
    assert credentials.upstream_target(CONN) == ("https", 9443, "127.0.0.1")


@pytest.mark.parametrize(
    ("status", "injected", "retried", "again"),
    [(401, True, False, True), (401, True, True, False), (401, False, False, False), (403, True, False, False),
     (None, True, False, False)],
)
def test_one_retry_only_after_a_401_to_the_injected_credential(
    status: int | None, injected: bool, retried: bool, again: bool
) -> None:
    assert credentials.retry_after_401(status, injected=injected, retried=retried) is again


def test_a_memo_serves_a_secret_for_its_ttl_and_knows_it_read_it() -> None:
    now = [0.0]
    memo = credentials.SecretMemo(60, monotonic=lambda: now[0])
    assert memo.fresh("id") is None and "id" not in memo
    memo.put("id", "v1")
    now[0] = 59.9
    assert memo.fresh("id") == "v1"
    now[0] = 60.0
    assert memo.fresh("id") is None and "id" in memo  # stale, but read once: re-read through a new cache
    memo.clear()
    assert "id" not in memo
