"""The detection rules' formats through the real gateway, both directions (issue 16, item 13).

An AWS key id is `AKIA` (or ASIA, ABIA, ACCA, A3T + one) and 16 of [A-Z0-9]. The rule read only
base32 ([A-Z2-7]), so a key with a 0, 1, 8 or 9 reached the upstream in a request and came back
unmasked in an answer. Keys are made at run time; none is a real credential.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from jitgate.devstack.chroma import collection_path, embedding
from jitgate.devstack.policy import READER_SUB
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
    """The real Chroma holds a document with the key (written there directly, as a loader would);
    a reader's get through the gateway (chroma-dev, the token as the store's own key header) sees it masked."""
    key = _key_id("AKIA")
    assert hostile.chroma is not None
    record = "k-" + secrets.token_hex(4)
    with httpx.Client(base_url=hostile.chroma.url, timeout=30, trust_env=False) as direct:
        col = direct.get(f"{collection_path()}/candidates").json()["id"]
        seed = {"ids": [record], "documents": [f"rotated key {key} last week"], "metadatas": [{"source": "wiki"}],
                "embeddings": [embedding(record)]}
        direct.post(f"{collection_path()}/{col}/add", json=seed).raise_for_status()
        try:
            token = mint("chroma-dev", sub=READER_SUB)["token"]
            with httpx.Client(proxy=hostile.gateway.url, timeout=30, trust_env=False) as c:
                resp = c.post(f"{hostile.chroma.url}{collection_path()}/{col}/get", json={"ids": [record]},
                              headers={"X-Chroma-Token": token})
        finally:
            direct.post(f"{collection_path()}/{col}/delete", json={"ids": [record]}).raise_for_status()
    assert resp.status_code == 200, resp.text
    assert resp.json()["ids"] == [record]
    assert key not in resp.text
    assert "[REDACTED:aws_access_key_id" in resp.json()["documents"][0]
