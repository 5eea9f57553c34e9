"""The detection rules' formats through the real gateway, both directions (issue 16, item 13).

An AWS key id is `AKIA` (or ASIA, ABIA, ACCA, A3T + one) and 16 of [A-Z0-9]. The rule read only
base32 ([A-Z2-7]), so a key with a 0, 1, 8 or 9 reached the upstream in a request and came back
unmasked in an answer. Keys are made at run time; none is a real credential.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

import pytest

from jitgate.devstack.policy import READER_SUB, secret_id
from tests.hostile.conftest import Hostile
from tests.reliability.harness import client, raw_record_bytes

_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def _key_id(prefix: str) -> str:
    """A key id whose 16 characters hold a 0, 1, 8 and 9 (one of them is enough to be missed before)."""
    body = [secrets.choice(_BASE32) for _ in range(12)] + ["0", "1", "8", "9"]
    secrets.SystemRandom().shuffle(body)
    return prefix + "".join(body)


@pytest.mark.parametrize("prefix", ["AKIA", "ASIA", "A3TX"])
def test_a_key_id_with_digits_in_a_request_is_blocked(
    hostile: Hostile, mint: Callable[..., dict[str, Any]], prefix: str
) -> None:
    key = _key_id(prefix)
    mark = len(hostile.upstream.received)
    body = {"model": "rerank-v3.5", "query": "deploy notes", "documents": [f"deploy key {key}", "b"]}
    with client(hostile.gateway, hostile.bundle, mint("cohere-test")["token"]) as c:
        resp = c.post(f"{hostile.upstream.url}/v2/rerank", json=body, headers={"Authorization": "Bearer placeholder"})
    assert (resp.status_code, resp.json()["code"]) == (403, "leak_blocked")
    assert key not in resp.text
    assert list(hostile.upstream.received)[mark:] == []
    assert key.encode() not in raw_record_bytes(hostile.moto, hostile.stack.bucket, hostile.gateway_id, hostile.spool)


def test_a_key_id_with_digits_in_an_answer_is_masked(hostile: Hostile, mint: Callable[..., dict[str, Any]]) -> None:
    key = _key_id("AKIA")
    collection = "candidates"
    real = hostile.stack.secrets[secret_id("store-test")]
    seed = {"ids": ["k1"], "documents": [f"rotated key {key} last week"], "metadatas": [{"src": "wiki"}]}
    added = hostile.upstream.handle(
        "POST", f"/api/v1/collections/{collection}/add", {"x-chroma-token": real}, json.dumps(seed).encode()
    )
    assert added[0] == 201
    token = mint("store-test", sub=READER_SUB)["token"]
    url = f"https://localhost:{hostile.upstream.port}/api/v1/collections/{collection}/get"
    with client(hostile.gateway, hostile.bundle, None) as c:  # the token as the store's own key header
        resp = c.post(url, json={"ids": ["k1"]}, headers={"X-Chroma-Token": token})
    assert resp.status_code == 200, resp.text
    assert key not in resp.text
    assert "[REDACTED:aws_access_key_id" in resp.json()["documents"][0]
