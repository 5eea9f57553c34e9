from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import exceptions, http
from mitmproxy.test import taddons, tflow

from addon import meta
from addon.scope_guard import ScopeGuard
from jitgate.policy import parse_policy
from jitgate.scope import document_count, filter_fields, lease_size, scope_error
from jitgate.state import USAGE_SK, usage_pk
from jitgate.token import Claims, new_jti
from tests.addon.jit_fixtures import (  # noqa: F401 (fixtures)
    ISSUER,
    POLICY,
    TABLE,
    anyio_backend_fixture,
    aws_fixture,
    policy_file_fixture,
)
from tests.bombs import bomb, traced_peak

pytestmark = pytest.mark.anyio
CONNS = parse_policy(POLICY).connections


def _claims(**over: Any) -> Claims:
    now = int(time.time())
    raw: dict[str, Any] = {
        "iss": ISSUER, "aud": "jitgate", "sub": "job", "iat": now, "nbf": now, "exp": now + 600,
        "jti": new_jti(), "conn": "rerank", "scope": {"operations": ["rerank"]}, "limits": {}, "mask": "default",
    }
    raw.update(over)
    return Claims.model_validate(raw)


STORE = {"conn": "store", "scope": {"operations": ["query", "get"], "collections": ["candidates"]}}


@pytest.mark.parametrize(
    ("claims", "conn", "method", "path", "code", "operation"),
    [
        ({}, "rerank", "POST", "/v2/rerank", None, "rerank"),
        ({}, "rerank", "POST", "/v1/rerank?x=1", None, "rerank"),
        ({}, "other", "POST", "/v1/rerank", "wrong_connection", ""),
        ({}, "rerank", "GET", "/v2/rerank", "operation_not_allowed", ""),
        ({}, "rerank", "POST", "/v2/embed", "operation_not_allowed", ""),
        (STORE, "store", "POST", "/api/v1/collections/candidates/query", None, "query"),
        (STORE, "store", "POST", "/api/v1/collections/secrets/query", "collection_not_allowed", "query"),
        (STORE, "store", "POST", "/api/v1/collections/candidates/delete", "operation_not_allowed", "delete"),
        (STORE, "store", "DELETE", "/api/v1/collections/candidates", "operation_not_allowed", "drop_collection"),
        ({"conn": "store", "scope": {"operations": ["get"], "collections": ["*"]}},
         "store", "POST", "/api/v2/tenants/t/databases/d/collections/any/get", None, "get"),
        ({"conn": "store", "scope": {"operations": ["get"]}},
         "store", "POST", "/api/v1/collections/candidates/get", "collection_not_allowed", "get"),
        ({"scope": {"operations": ["rerank"], "paths": ["/v2/*"]}}, "rerank", "POST", "/v1/rerank",
         "operation_not_allowed", "rerank"),
        ({"scope": {"operations": ["rerank"], "methods": ["GET"]}}, "rerank", "POST", "/v2/rerank",
         "operation_not_allowed", "rerank"),
    ],
)
def test_scope_error(
    claims: dict[str, Any], conn: str, method: str, path: str, code: str | None, operation: str
) -> None:
    err, op, _ = scope_error(_claims(**claims), CONNS[conn], method, path)
    assert (err.code if err else None) == code
    assert op == operation


@pytest.mark.parametrize(
    ("dialect", "operation", "body", "count"),
    [
        ("cohere", "rerank", {"documents": ["a", "b"]}, 2),
        ("jina", "rerank", {"documents": [{"text": "a"}]}, 1),
        ("tei", "rerank", {"texts": ["a", "b", "c"]}, 3),
        ("cohere", "rerank", {"documents": "a"}, None),
        ("cohere", "rerank", ["a"], None),
        ("chroma", "add", {"ids": ["1", "2"]}, 2),
        ("chroma", "query", {"query_texts": ["q"]}, 0),
    ],
)
def test_document_count(dialect: str, operation: str, body: Any, count: int | None) -> None:
    assert document_count(dialect, operation, body) == count


def test_filter_fields_keeps_only_granted_columns() -> None:
    body = {"ids": [["1"]], "documents": [["d"]], "embeddings": [[[0.1]]], "included": ["documents", "embeddings"]}
    kept = filter_fields(body, ("ids", "documents"))
    assert kept == {"ids": [["1"]], "documents": [["d"]], "included": ["documents"]}
    assert filter_fields([1, 2], ("ids",)) == [1, 2]


def _guard(aws: dict[str, Any]) -> ScopeGuard:
    return ScopeGuard(dynamodb=aws["dynamodb"])


def _flow(claims: Claims | None, *, host: str = "api.cohere.com", path: str = "/v2/rerank", body: Any = None) -> Any:
    f = tflow.tflow()
    f.request.host, f.request.port, f.request.scheme = host, 443, "https"
    f.request.method, f.request.path = "POST", path
    f.request.content = json.dumps(body if body is not None else {"query": "q", "documents": ["a"]}).encode()
    f.server_conn.address = (host, 443)
    if claims is not None:
        f.metadata[meta.CLAIMS] = claims
    return f


async def test_connect_to_a_host_of_no_connection_is_refused(aws: dict[str, Any], policy_file: Path) -> None:
    guard = _guard(aws)
    with taddons.context(guard) as tctx:
        tctx.configure(guard, jitgate_policy=str(policy_file), jitgate_table=TABLE)
        bad, good = tflow.tflow(), tflow.tflow()
        bad.request.method = good.request.method = "CONNECT"
        bad.request.host, good.request.host = "example.org", "api.cohere.com"
        guard.http_connect(bad)
        guard.http_connect(good)
    assert (bad.response.status_code, bad.response.json()["code"]) == (403, "host_not_allowed")
    assert good.response is None


async def test_allowed_request_sets_metadata(aws: dict[str, Any], policy_file: Path) -> None:
    guard = _guard(aws)
    with taddons.context(guard) as tctx:
        tctx.configure(guard, jitgate_policy=str(policy_file), jitgate_table=TABLE)
        f = _flow(_claims(conn="store", scope=STORE["scope"]), host="store.internal",
                  path="/api/v1/collections/candidates/query")
        await guard.request(f)
    assert f.response is None
    assert meta.connection_name(f) == "store"
    assert (f.metadata[meta.OPERATION], f.metadata[meta.COLLECTION]) == ("query", "candidates")


@pytest.mark.parametrize(
    ("claims", "kw", "status", "code"),
    [
        (None, {}, 401, "invalid_token"),
        ({}, {"host": "example.org"}, 403, "host_not_allowed"),
        ({"conn": "other"}, {}, 403, "wrong_connection"),
        ({"limits": {"max_bytes": 10}}, {}, 413, "payload_too_large"),
        ({"limits": {"max_documents": 2}}, {"body": {"query": "q", "documents": ["a", "b", "c"]}}, 413,
         "payload_too_large"),
        ({"limits": {"max_documents": 2}}, {"body": {"query": "q", "documents": "abc"}}, 400, "bad_request"),
    ],
)
async def test_refusals(
    aws: dict[str, Any], policy_file: Path, claims: dict[str, Any] | None, kw: dict[str, Any], status: int, code: str
) -> None:
    guard = _guard(aws)
    with taddons.context(guard) as tctx:
        tctx.configure(guard, jitgate_policy=str(policy_file), jitgate_table=TABLE)
        f = _flow(_claims(**claims) if claims is not None else None, **kw)
        await guard.request(f)
    assert (f.response.status_code, f.response.json()["code"]) == (status, code)
    assert meta.CONNECTION not in f.metadata


async def test_host_header_may_not_leave_the_tunnel(aws: dict[str, Any], policy_file: Path) -> None:
    guard = _guard(aws)
    with taddons.context(guard) as tctx:
        tctx.configure(guard, jitgate_policy=str(policy_file), jitgate_table=TABLE)
        f = _flow(_claims(conn="other", scope={"operations": ["rerank"]}), host="api.jina.ai", path="/v1/rerank")
        f.server_conn.address = ("api.cohere.com", 443)  # CONNECTed to one connection, Host names another
        await guard.request(f)
    assert f.response.json()["code"] == "host_not_allowed"


async def test_request_limit_holds_across_gateway_instances(aws: dict[str, Any], policy_file: Path) -> None:
    claims = _claims(limits={"max_requests": 3})
    first, second = _guard(aws), _guard(aws)
    answers = []
    for guard in (first, second):  # two gateways, one table
        with taddons.context(guard) as tctx:
            tctx.configure(guard, jitgate_policy=str(policy_file), jitgate_table=TABLE)
    for guard in (first, second, first, second, first):
        f = _flow(claims)
        await guard.request(f)
        answers.append(f.response.status_code if f.response else 200)
    assert answers == [200, 200, 200, 429, 429]
    item = aws["dynamodb"].get_item(TableName=TABLE, Key={"pk": {"S": usage_pk(claims.jti)}, "sk": {"S": USAGE_SK}})
    assert item["Item"]["n"]["N"] == "3"
    assert item["Item"]["expires_at"]["N"] == str(claims.exp)


async def test_no_counter_call_without_max_requests(aws: dict[str, Any], policy_file: Path) -> None:
    guard = ScopeGuard(dynamodb=object())  # any DynamoDB call would raise
    with taddons.context(guard) as tctx:
        tctx.configure(guard, jitgate_policy=str(policy_file), jitgate_table=TABLE)
        f = _flow(_claims())
        await guard.request(f)
    assert f.response is None


async def test_counter_unavailable_fails_closed(aws: dict[str, Any], policy_file: Path) -> None:
    guard = ScopeGuard(dynamodb=object())
    with taddons.context(guard) as tctx:
        tctx.configure(guard, jitgate_policy=str(policy_file), jitgate_table=TABLE)
        f = _flow(_claims(limits={"max_requests": 5}))
        await guard.request(f)
    assert (f.response.status_code, f.response.json()["code"]) == (503, "usage_unavailable")


def _store_flow(fields: list[str] | None, body: bytes, status: int = 200) -> Any:
    scope: dict[str, Any] = {"operations": ["query"], "collections": ["candidates"]}
    if fields is not None:
        scope["fields"] = fields
    f = _flow(_claims(conn="store", scope=scope), host="store.internal")
    f.metadata[meta.CONNECTION] = CONNS["store"]
    f.response = http.Response.make(status, body, {"Content-Type": "application/json"})
    return f


async def test_store_answers_keep_only_granted_fields(aws: dict[str, Any], policy_file: Path) -> None:
    answer = {"ids": [["1"]], "documents": [["doc"]], "embeddings": [[[0.5]]], "metadatas": [[{"pii": "x"}]],
              "included": ["documents", "embeddings", "metadatas"]}
    guard = _guard(aws)
    with taddons.context(guard) as tctx:
        tctx.configure(guard, jitgate_policy=str(policy_file), jitgate_table=TABLE)
        limited = _store_flow(["ids", "documents"], json.dumps(answer).encode())
        guard.response(limited)
        everything = _store_flow(None, json.dumps(answer).encode())
        guard.response(everything)
        garbled = _store_flow(["ids"], b"<html>not json")
        guard.response(garbled)
    assert limited.response.json() == {"ids": [["1"]], "documents": [["doc"]], "included": ["documents"]}
    assert everything.response.json() == answer
    assert (garbled.response.status_code, garbled.response.json()["code"]) == (502, "upstream_response_invalid")


async def test_store_answer_bomb_is_sized_not_decoded(aws: dict[str, Any], policy_file: Path) -> None:
    guard = _guard(aws)
    with taddons.context(guard) as tctx:
        tctx.configure(guard, jitgate_policy=str(policy_file), jitgate_table=TABLE)
        f = _store_flow(["ids"], b"")
        f.response.headers["content-encoding"] = "gzip"
        f.response.raw_content = bomb("gzip", 48 * 1024 * 1024)
        small = _store_flow(["ids"], b"")
        small.response.headers["content-encoding"] = "gzip"
        small.response.raw_content = gzip.compress(json.dumps({"ids": [["1"]], "documents": [["d"]]}).encode())
        _, peak = traced_peak(lambda: guard.response(f))
        guard.response(small)
    assert peak < 8 * 1024 * 1024  # sized a piece at a time, never held decoded
    assert (f.response.status_code, f.response.json()["code"]) == (502, "upstream_response_too_large")
    assert small.response.json() == {"ids": [["1"]]}


@pytest.mark.parametrize(
    ("max_requests", "lease", "size"),
    [(3, 16, 1), (49, 16, 1), (100, 16, 2), (1000, 16, 16), (10**6, 16, 16), (10**6, 1, 1)],
)
def test_lease_size(max_requests: int, lease: int, size: int) -> None:
    assert lease_size(max_requests, lease) == size


async def test_leased_counter_is_exact_across_gateways_with_fewer_updates(
    aws: dict[str, Any], policy_file: Path
) -> None:
    claims = _claims(limits={"max_requests": 200})  # lease of 4 uses per update
    updates: list[int] = []

    class Counting:
        def __init__(self, client: Any) -> None:
            self.client, self.exceptions = client, client.exceptions

        def update_item(self, **kw: Any) -> Any:
            updates.append(0)  # an attempt; replaced by its size when it succeeds
            answer = self.client.update_item(**kw)
            updates[-1] = int(kw["ExpressionAttributeValues"][":k"]["N"])
            return answer

    first, second = ScopeGuard(dynamodb=Counting(aws["dynamodb"])), ScopeGuard(dynamodb=Counting(aws["dynamodb"]))
    for guard in (first, second):
        with taddons.context(guard) as tctx:
            tctx.configure(guard, jitgate_policy=str(policy_file), jitgate_table=TABLE)
    allowed = 0
    for i in range(230):
        f = _flow(claims)
        await (first if i % 2 else second).request(f)
        allowed += f.response is None
        if f.response is not None:
            assert f.response.json()["code"] == "request_limit_exceeded"
    item = aws["dynamodb"].get_item(TableName=TABLE, Key={"pk": {"S": usage_pk(claims.jti)}, "sk": {"S": USAGE_SK}})
    assert allowed == 200 and item["Item"]["n"]["N"] == "200"
    assert updates.count(4) == 50 and updates.count(1) == 0
    # Once used up, each gateway asked once more (a block, then a single use) and then stopped asking.
    assert updates.count(0) == 4


async def test_usage_lease_option_is_validated(aws: dict[str, Any], policy_file: Path) -> None:
    guard = _guard(aws)
    with taddons.context(guard) as tctx:
        tctx.configure(guard, jitgate_policy=str(policy_file), jitgate_table=TABLE)
        with pytest.raises(exceptions.OptionsError, match="jitgate_usage_lease"):
            tctx.configure(guard, jitgate_usage_lease=0)
