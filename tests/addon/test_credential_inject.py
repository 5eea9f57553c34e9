from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest
from mitmproxy import exceptions, http
from mitmproxy.proxy.layers.http import HttpResponseHook
from mitmproxy.test import taddons, tflow

from addon import meta
from addon.credential_inject import CredentialInject, CredentialRetry, secret_value
from jitgate.devstack.upstream import Upstream
from jitgate.policy import Connection, parse_policy
from tests.addon.jit_fixtures import (  # noqa: F401 (fixtures)
    POLICY,
    anyio_backend_fixture,
    aws_fixture,
    policy_file_fixture,
)

pytestmark = pytest.mark.anyio


def _fake_key() -> str:
    return "co-" + secrets.token_hex(16)


@pytest.mark.parametrize(
    ("raw", "key", "expected"),
    [
        ("plain", None, "plain"),
        ('{"api_key": "k"}', "api_key", "k"),
        ('{"other": "k"}', "api_key", None),
        ('{"api_key": 5}', "api_key", None),
        ("[1]", "api_key", None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_secret_value(raw: str | None, key: str | None, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(ValueError):
            secret_value(raw, key)
    else:
        assert secret_value(raw, key) == expected


def _flow(conn: Connection | None, **headers: str) -> Any:
    f = tflow.tflow()
    f.request.host, f.request.port, f.request.scheme = "api.cohere.com", 443, "https"
    f.request.method, f.request.path = "POST", "/v2/rerank"
    f.request.headers["Host"] = "api.cohere.com"
    for k, v in headers.items():
        f.request.headers[k.replace("_", "-")] = v
    if conn is not None:
        f.metadata[meta.CONNECTION] = conn
    return f


def _rerank_addon(aws: dict[str, Any]) -> tuple[str, CredentialInject, Connection]:
    """A fresh fake key in Secrets Manager for `rerank`, the addon and the connection."""
    real = _fake_key()
    aws["secretsmanager"].create_secret(Name="jitgate/rerank", SecretString=json.dumps({"api_key": real}))
    return real, CredentialInject(secretsmanager=aws["secretsmanager"]), parse_policy(POLICY).connections["rerank"]


async def test_injects_secret_strips_client_credentials_and_targets_upstream(
    aws: dict[str, Any], policy_file: Path
) -> None:
    real, addon, conn = _rerank_addon(aws)
    with taddons.context(addon) as tctx:
        tctx.configure(addon, jitgate_policy=str(policy_file))
        f = _flow(conn, Authorization="Bearer client-own", X_Api_Key="client-other")
        await addon.request(f)
    assert f.response is None and f.metadata[meta.INJECTED] is True
    assert f.request.headers.get_all("Authorization") == [f"Bearer {real}"]
    assert "X-Api-Key" not in f.request.headers
    assert (f.request.scheme, f.request.host, f.request.port) == ("https", "127.0.0.1", 9443)
    assert f.request.headers["Host"] == "127.0.0.1:9443"


async def test_flows_still_in_flight_at_shutdown_lose_the_credential(aws: dict[str, Any], policy_file: Path) -> None:
    """`done` runs before mitmproxy's Save addon writes the flows in flight (`-w`)."""
    real, addon, conn = _rerank_addon(aws)
    with taddons.context(addon) as tctx:
        tctx.configure(addon, jitgate_policy=str(policy_file))
        waiting, answered = _flow(conn), _flow(conn)
        await addon.request(waiting)
        await addon.request(answered)
        answered.response = tflow.tresp()
        addon.response(answered)
        assert waiting.request.headers["Authorization"] == f"Bearer {real}"  # sent with it
        addon.done()
    for f in (waiting, answered):
        assert "Authorization" not in f.request.headers and meta.INJECTED_SECRET not in f.metadata
    assert waiting.metadata[meta.INJECTED] is True  # the record still says it was injected


async def test_key_header_format_for_a_store(aws: dict[str, Any], policy_file: Path) -> None:
    real = _fake_key()
    aws["secretsmanager"].create_secret(Name="jitgate/store", SecretString=real)
    addon = CredentialInject(secretsmanager=aws["secretsmanager"])
    conn = parse_policy(POLICY).connections["store"]
    with taddons.context(addon) as tctx:
        tctx.configure(addon, jitgate_policy=str(policy_file))
        f = _flow(conn, X_Chroma_Token="client-supplied")
        await addon.request(f)
    assert f.request.headers.get_all("X-Chroma-Token") == [real]
    assert "Authorization" not in f.request.headers
    assert (f.request.host, f.request.port) == ("store.internal", 8000)


async def test_secret_unavailable_fails_closed_but_a_cached_one_is_used(
    aws: dict[str, Any], policy_file: Path
) -> None:
    conns = parse_policy(POLICY).connections
    addon = CredentialInject(secretsmanager=aws["secretsmanager"])
    aws["secretsmanager"].create_secret(Name="jitgate/store", SecretString=_fake_key())
    with taddons.context(addon) as tctx:
        tctx.configure(addon, jitgate_policy=str(policy_file))
        missing = _flow(conns["rerank"])  # no such secret
        await addon.request(missing)
        first = _flow(conns["store"])
        await addon.request(first)
        aws["secretsmanager"].delete_secret(SecretId="jitgate/store", ForceDeleteWithoutRecovery=True)
        cached = _flow(conns["store"])
        await addon.request(cached)
    assert (missing.response.status_code, missing.response.json()["code"]) == (503, "credential_unavailable")
    assert meta.INJECTED not in missing.metadata
    assert missing.request.host == "api.cohere.com"  # nothing was pointed anywhere
    assert first.response is None and cached.response is None
    assert cached.request.headers["X-Chroma-Token"] == first.request.headers["X-Chroma-Token"]


async def test_unscoped_request_is_refused(aws: dict[str, Any], policy_file: Path) -> None:
    addon = CredentialInject(secretsmanager=aws["secretsmanager"])
    with taddons.context(addon) as tctx:
        tctx.configure(addon, jitgate_policy=str(policy_file))
        f = _flow(None)
        await addon.request(f)
    assert f.response.status_code == 500 and meta.INJECTED not in f.metadata


async def test_refused_flows_are_left_alone(aws: dict[str, Any], policy_file: Path) -> None:
    addon = CredentialInject(secretsmanager=aws["secretsmanager"])
    with taddons.context(addon) as tctx:
        tctx.configure(addon, jitgate_policy=str(policy_file))
        f = _flow(parse_policy(POLICY).connections["rerank"])
        f.metadata[meta.ERROR] = "token_required"
        await addon.request(f)
    assert meta.INJECTED not in f.metadata and "Authorization" not in f.request.headers


async def test_upstream_ca_option_writes_a_combined_bundle(
    aws: dict[str, Any], policy_file: Path, tmp_path: Path
) -> None:
    up = Upstream(api_keys=[_fake_key()])
    ca = tmp_path / "ca.pem"
    ca.write_bytes(up.ca_pem())
    addon = CredentialInject(secretsmanager=aws["secretsmanager"])
    with taddons.context(addon) as tctx:
        tctx.configure(addon, jitgate_policy=str(policy_file), jitgate_upstream_ca=str(ca))
        bundle = Path(tctx.options.ssl_verify_upstream_trusted_ca).read_bytes()
        with pytest.raises(exceptions.OptionsError, match="jitgate_upstream_ca"):
            tctx.configure(addon, jitgate_upstream_ca=str(tmp_path / "missing.pem"))
        addon.done()
    assert up.ca_pem() in bundle
    assert Path(certifi.where()).read_bytes() in bundle


@contextlib.contextmanager
def _rotation(
    aws: dict[str, Any], tmp_path: Path, upstream_keys: list[str], old: str
) -> Iterator[tuple[Upstream, Path, Connection]]:
    """An upstream accepting `upstream_keys`, a policy pointing at it and its CA file; the secret holds `old`."""
    aws["secretsmanager"].create_secret(Name="jitgate/rerank", SecretString=json.dumps({"api_key": old}))
    with Upstream(api_keys=upstream_keys) as up:
        policy = tmp_path / "p.yaml"
        policy.write_text(POLICY.replace("https://127.0.0.1:9443", up.url))
        (tmp_path / "ca.pem").write_bytes(up.ca_pem())
        yield up, policy, parse_policy(policy.read_text()).connections["rerank"]


def _rotate(aws: dict[str, Any], new: str) -> None:
    aws["secretsmanager"].put_secret_value(SecretId="jitgate/rerank", SecretString=json.dumps({"api_key": new}))


def _rerank_flow(conn: Connection) -> Any:
    f = _flow(conn)
    f.request.content = json.dumps({"query": "apple", "documents": ["pear", "apple"]}).encode()
    return f


async def test_401_refreshes_the_secret_and_retries_once(aws: dict[str, Any], tmp_path: Path) -> None:
    old, new = _fake_key(), _fake_key()
    with _rotation(aws, tmp_path, [old], old) as (up, policy, conn):
        addon = CredentialInject(secretsmanager=aws["secretsmanager"])
        retry = CredentialRetry(addon)
        with taddons.context(addon) as tctx:
            tctx.configure(addon, jitgate_policy=str(policy), jitgate_upstream_ca=str(tmp_path / "ca.pem"))
            f = _rerank_flow(conn)
            await addon.request(f)  # injects the old key, still cached
            up.set_api_keys([new])
            _rotate(aws, new)
            f.response = http.Response.make(401, b'{"message": "invalid api token"}')
            await retry.response(f)
            addon.response(f)
            second = http.Response.make(401, b"{}")
            f.response = second
            await retry.response(f)  # once only
            addon.response(f)
            addon.done()
        seen = [r.headers.get("authorization") for r in up.received]
    assert seen == [f"Bearer {new}"]
    assert f.response is second
    # The retry sent the fresh key (above); once answered, the flow keeps no credential (`-w` files).
    assert "Authorization" not in f.request.headers
    assert meta.INJECTED_SECRET not in f.metadata


async def test_retried_answer_is_the_upstream_answer(aws: dict[str, Any], tmp_path: Path) -> None:
    old, new = _fake_key(), _fake_key()
    with _rotation(aws, tmp_path, [new], old) as (_, policy, conn):
        addon = CredentialInject(secretsmanager=aws["secretsmanager"])
        masker, outsider = Watcher("addon.leak_guard"), Watcher("mitmproxy.addons.dumper")
        # The chain's order: the retry before the response checks, the injector (forget) after them.
        with taddons.context(CredentialRetry(addon), masker, outsider, addon) as tctx:
            tctx.configure(addon, jitgate_policy=str(policy), jitgate_upstream_ca=str(tmp_path / "ca.pem"))
            f = _rerank_flow(conn)
            await addon.request(f)
            _rotate(aws, new)
            f.response = http.Response.make(401, b"{}")
            await tctx.master.addons.handle_lifecycle(HttpResponseHook(f))
            addon.done()
    assert f.response.status_code == 200
    assert [r["index"] for r in f.response.json()["results"]] == [1, 0]
    assert masker.seen == [200]  # the chain's response checks ran on the retried answer, once
    assert outsider.seen == [200]  # and so did mitmproxy's own addons: nothing ran twice
    assert meta.INJECTED_SECRET not in f.metadata  # forgotten after the checks


class Watcher:
    """A stand-in addon with a response hook, reporting from the module it claims to be in."""

    def __init__(self, module: str) -> None:
        self.seen: list[int] = []
        # A class per instance, so the addon manager sees two distinct names and modules.
        self.__class__ = type(f"Watcher_{module.replace('.', '_')}", (Watcher,), {"__module__": module})

    def response(self, flow: Any) -> None:
        self.seen.append(flow.response.status_code)


async def test_hot_path_reads_memory_and_rereads_after_the_ttl(aws: dict[str, Any], policy_file: Path) -> None:
    sm = aws["secretsmanager"]
    sm.create_secret(Name="jitgate/store", SecretString=_fake_key())
    reads: list[str] = []

    class CountingCache:
        def __init__(self, client: Any) -> None:
            self.client = client

        def get_secret_string(self, secret_id: str) -> str:
            reads.append(secret_id)
            value: str = self.client.get_secret_value(SecretId=secret_id)["SecretString"]
            return value

    addon = CredentialInject(secretsmanager=sm, cache_factory=CountingCache)  # type: ignore[arg-type]
    conn = parse_policy(POLICY).connections["store"]
    with taddons.context(addon) as tctx:
        tctx.configure(addon, jitgate_policy=str(policy_file), jitgate_secret_ttl=60)
        for _ in range(3):
            await addon.request(_flow(conn))
        assert reads == ["jitgate/store"]
        rotated = _fake_key()
        sm.put_secret_value(SecretId="jitgate/store", SecretString=rotated)
        value, fetched = addon._memo["jitgate/store"]
        addon._memo["jitgate/store"] = (value, fetched - 61)  # the memo is past its ttl
        f = _flow(conn)
        await addon.request(f)
        with pytest.raises(exceptions.OptionsError, match="jitgate_secret_ttl"):
            tctx.configure(addon, jitgate_secret_ttl=0)
    assert reads == ["jitgate/store"] * 2
    assert f.request.headers["X-Chroma-Token"] == rotated
