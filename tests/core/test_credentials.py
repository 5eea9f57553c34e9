"""jitgate.credentials: where the upstream credential goes and how long a secret is used."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from aws_secretsmanager_caching import SecretCache, SecretCacheConfig
from moto import mock_aws

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


@pytest.fixture
def sm() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        client.create_secret(Name=CONN.credential.secret_id, SecretString=_secret(secrets.token_urlsafe(24)))
        yield client


def _secret(key: str) -> str:
    return json.dumps({CONN.credential.json_key: key})


def _key(sm: Any) -> str:
    raw = sm.get_secret_value(SecretId=CONN.credential.secret_id)["SecretString"]
    return str(json.loads(raw)[CONN.credential.json_key])


def _source(sm: Any, now: list[float], made: list[int]) -> credentials.SecretSource:
    def reader() -> SecretCache:
        made.append(1)
        return SecretCache(SecretCacheConfig(secret_refresh_interval=3600), sm)

    return credentials.SecretSource(60, reader, monotonic=lambda: now[0])


def test_a_source_reads_once_then_serves_from_memory_until_the_ttl(sm: Any) -> None:
    now, made = [0.0], []
    source = _source(sm, now, made)
    first = _key(sm)
    assert source.fresh(CONN) is None
    assert source.get(CONN) == first and source.fresh(CONN) == first
    rotated = secrets.token_urlsafe(24)
    sm.put_secret_value(SecretId=CONN.credential.secret_id, SecretString=_secret(rotated))
    assert source.get(CONN) == first and made == [1]  # within the TTL: no new read
    now[0] = 61.0
    assert source.fresh(CONN) is None
    assert source.get(CONN) == rotated and made == [1, 1]  # past it: read through a new cache


def test_rotate_reads_afresh_and_keeps_the_old_value_when_that_fails(sm: Any) -> None:
    now, made = [0.0], []
    source = _source(sm, now, made)
    first = source.get(CONN)
    rotated = secrets.token_urlsafe(24)
    sm.put_secret_value(SecretId=CONN.credential.secret_id, SecretString=_secret(rotated))
    assert source.rotate(CONN) == rotated and source.fresh(CONN) == rotated
    sm.delete_secret(SecretId=CONN.credential.secret_id, ForceDeleteWithoutRecovery=True)
    assert source.rotate(CONN) is None and source.get(CONN) == rotated != first


def test_a_new_ttl_rereads_through_the_same_cache_and_reset_drops_the_caches(sm: Any) -> None:
    now, made = [0.0], []
    source = _source(sm, now, made)
    source.get(CONN)
    source.set_ttl(5)
    assert source.fresh(CONN) is None and source.memo.ttl == 5
    source.get(CONN)
    assert len(made) == 1  # the cache it came from was kept
    now[0] = 5.0
    source.get(CONN)
    assert len(made) == 2  # past the TTL: read through a new cache
    source.reset()
    assert source.fresh(CONN) is None
    source.get(CONN)
    assert len(made) == 3  # after the reset: another
