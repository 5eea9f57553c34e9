from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons, tflow

from addon import meta
from addon.token_gate import TokenGate
from jitgate import token_intake
from jitgate.state import REVOCATION_PK
from jitgate.token import Claims, KeySet
from jitgate.token_intake import key_header_token, proxy_token
from tests.addon.jit_fixtures import (  # noqa: F401 (fixtures)
    ISSUER,
    JWKS_URL,
    POLICY,
    TABLE,
    Signer,
    anyio_backend_fixture,
    aws_fixture,
    policy_file_fixture,
)

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Fetcher:
    def __init__(self, *signers: Signer, fail: bool = False) -> None:
        self.signers = list(signers)
        self.fail = fail
        self.calls = 0

    def __call__(self, url: str) -> KeySet:
        assert url == JWKS_URL
        self.calls += 1
        if self.fail:
            raise OSError("broker down")
        from jitgate.token import public_jwk

        return KeySet.from_jwks({"keys": [public_jwk(s.key.public_key(), s.kid) for s in self.signers]})


def _gate(aws: dict[str, Any], fetcher: Fetcher, mono: Clock | None = None) -> TokenGate:
    return TokenGate(jwks_fetcher=fetcher, dynamodb=aws["dynamodb"], monotonic=mono or Clock())


def _configure(tctx: taddons.context, gate: TokenGate, policy_file: Path, **over: Any) -> None:
    opts: dict[str, Any] = {"jitgate_policy": str(policy_file), "jitgate_jwks_url": JWKS_URL, "jitgate_table": TABLE}
    opts.update(over)
    tctx.configure(gate, **opts)


def _flow(host: str = "api.cohere.com", headers: dict[str, str] | None = None) -> Any:
    f = tflow.tflow()
    f.request.host = host
    f.request.port = 443
    f.request.scheme = "https"
    f.request.method = "POST"
    f.request.path = "/v2/rerank"
    for k, v in (headers or {}).items():
        f.request.headers[k] = v
    return f


def _basic(token: str) -> str:
    return "Basic " + base64.b64encode(f"jit:{token}".encode()).decode()


def _revoke(aws: dict[str, Any], jti: str, expires_at: float) -> None:
    aws["dynamodb"].put_item(
        TableName=TABLE,
        Item={"pk": {"S": REVOCATION_PK}, "sk": {"S": jti}, "expires_at": {"N": str(int(expires_at))}},
    )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (_basic("eyJa.b.c"), "eyJa.b.c"),
        ("Bearer eyJa.b.c", "eyJa.b.c"),
        ("Basic " + base64.b64encode(b"jit:").decode(), None),
        ("Basic not-base64!", None),
        ("Digest abc", None),
        ("Basic " + base64.b64encode(b"no-colon").decode(), None),
    ],
)
def test_proxy_token(header: str, expected: str | None) -> None:
    assert proxy_token(header) == expected


@pytest.mark.parametrize(
    ("value", "fmt", "expected"),
    [
        ("Bearer eyJa.b.c", "Bearer {secret}", "eyJa.b.c"),
        ("eyJa.b.c", "{secret}", "eyJa.b.c"),
        ("Token eyJa.b.c", "Bearer {secret}", None),
        ("sk-realkey", "{secret}", None),
        ("key=eyJa.b.c;", "key={secret};", "eyJa.b.c"),
    ],
)
def test_key_header_token(value: str, fmt: str, expected: str | None) -> None:
    assert key_header_token(value, fmt) == expected


async def test_missing_token_is_407_with_proxy_authenticate(aws: dict[str, Any], policy_file: Path) -> None:
    gate = _gate(aws, Fetcher(Signer()))
    with taddons.context(gate) as tctx:
        _configure(tctx, gate, policy_file)
        gate.running()
        f = _flow(headers={"Authorization": "Bearer not-a-jit-token"})
        await gate.request(f)
        gate.done()
    assert f.response.status_code == 407
    assert f.response.headers["Proxy-Authenticate"].startswith("Basic")
    assert f.response.json()["code"] == "token_required"
    assert meta.state_of(f).claims is None


@pytest.mark.parametrize("how", ["bearer", "proxy-basic", "connect", "key-header"])
async def test_valid_token_in_each_place_is_accepted_and_stripped(
    aws: dict[str, Any], policy_file: Path, how: str
) -> None:
    signer = Signer()
    gate = _gate(aws, Fetcher(signer))
    conn = "store" if how == "key-header" else "rerank"
    token = signer.mint(conn=conn)
    with taddons.context(gate) as tctx:
        _configure(tctx, gate, policy_file)
        gate.running()
        f = _flow(host="store.internal" if how == "key-header" else "api.cohere.com")
        if how == "bearer":
            f.request.headers["Authorization"] = f"Bearer {token}"
        elif how == "proxy-basic":
            f.request.headers["Proxy-Authorization"] = _basic(token)
        elif how == "key-header":
            f.request.headers["X-Chroma-Token"] = token
        else:
            connect = tflow.tflow()
            connect.request.method = "CONNECT"
            connect.request.headers["Proxy-Authorization"] = _basic(token)
            connect.client_conn = f.client_conn
            gate.http_connect(connect)
            assert "Proxy-Authorization" not in connect.request.headers
        await gate.request(f)
        gate.done()
    assert f.response is None
    claims = meta.state_of(f).claims
    assert isinstance(claims, Claims) and claims.conn == conn
    assert len(meta.state_of(f).token_sha256) == 64
    forwarded = bytes(f.request.headers.fields.__repr__(), "utf-8")
    assert token.encode() not in forwarded
    assert all(token not in v for v in f.request.headers.values())


@pytest.mark.parametrize("how", ["bearer", "connect"])
async def test_copies_of_the_token_in_other_headers_are_removed(
    aws: dict[str, Any], policy_file: Path, how: str
) -> None:
    """An SDK sending its key in two headers, or a debug header quoting it: no copy goes upstream."""
    signer = Signer()
    gate = _gate(aws, Fetcher(signer))
    token = signer.mint(conn="rerank")
    with taddons.context(gate) as tctx:
        _configure(tctx, gate, policy_file)
        gate.running()
        f = _flow(host="api.cohere.com")
        if how == "bearer":
            f.request.headers["Authorization"] = f"Bearer {token}"
        else:
            connect = tflow.tflow()
            connect.request.headers["Proxy-Authorization"] = _basic(token)
            connect.client_conn = f.client_conn
            gate.http_connect(connect)
        f.request.headers["X-Goog-Api-Key"] = token
        f.request.headers.add("X-Debug", f"key={token};trace=1")
        f.request.headers.add("X-Debug", "trace=2")
        f.request.headers["X-Request-Id"] = "r-1"
        await gate.request(f)
        gate.done()
    assert f.response is None and meta.state_of(f).claims is not None
    assert all(token not in value for value in f.request.headers.values(multi=True))
    assert "X-Goog-Api-Key" not in f.request.headers
    assert f.request.headers["X-Request-Id"] == "r-1"  # headers without the token stay


async def test_connect_binding_ends_with_the_client_connection(aws: dict[str, Any], policy_file: Path) -> None:
    signer = Signer()
    gate = _gate(aws, Fetcher(signer))
    with taddons.context(gate) as tctx:
        _configure(tctx, gate, policy_file)
        gate.running()
        connect = tflow.tflow()
        connect.request.headers["Proxy-Authorization"] = _basic(signer.mint())
        gate.http_connect(connect)
        gate.client_disconnected(connect.client_conn)
        f = _flow()
        f.client_conn = connect.client_conn
        await gate.request(f)
        gate.done()
    assert f.response.status_code == 407


@pytest.mark.parametrize(
    ("over", "code", "status"),
    [
        ({"exp": int(time.time()) - 120, "iat": int(time.time()) - 700, "nbf": int(time.time()) - 700},
         "token_expired", 401),
        ({"iss": "https://evil.test"}, "invalid_token", 401),
        ({"aud": "someone-else"}, "invalid_token", 401),
        ({"nbf": int(time.time()) + 3600, "exp": int(time.time()) + 7200}, "token_not_yet_valid", 401),
    ],
)
async def test_bad_claims_are_refused(
    aws: dict[str, Any], policy_file: Path, over: dict[str, Any], code: str, status: int
) -> None:
    signer = Signer()
    gate = _gate(aws, Fetcher(signer))
    with taddons.context(gate) as tctx:
        _configure(tctx, gate, policy_file)
        gate.running()
        f = _flow(headers={"Authorization": f"Bearer {signer.mint(**over)}"})
        await gate.request(f)
        gate.done()
    assert (f.response.status_code, f.response.json()["code"]) == (status, code)
    assert meta.state_of(f).error == code


async def test_forged_signature_is_invalid(aws: dict[str, Any], policy_file: Path) -> None:
    trusted, forger = Signer(), Signer()  # same kid, different key
    gate = _gate(aws, Fetcher(trusted))
    with taddons.context(gate) as tctx:
        _configure(tctx, gate, policy_file)
        gate.running()
        f = _flow(headers={"Authorization": f"Bearer {forger.mint()}"})
        await gate.request(f)
        gate.done()
    assert f.response.status_code == 401
    assert f.response.json() == {"code": "invalid_token", "message": "token signature is invalid"}


async def test_verification_is_cached_but_revocation_checked_every_time(
    aws: dict[str, Any], policy_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    signer = Signer()
    gate = _gate(aws, Fetcher(signer))
    calls = []
    real = token_intake.verify_token
    monkeypatch.setattr(token_intake, "verify_token", lambda *a, **k: calls.append(1) or real(*a, **k))
    token = signer.mint()
    with taddons.context(gate) as tctx:
        _configure(tctx, gate, policy_file)
        gate.running()
        first, second = _flow(headers={"Authorization": f"Bearer {token}"}), _flow(
            headers={"Authorization": f"Bearer {token}"}
        )
        await gate.request(first)
        await gate.request(second)
        assert first.response is None and second.response is None
        assert len(calls) == 1
        _revoke(aws, meta.state_of(first).claims.jti, time.time() + 600)
        assert gate.revocations.refresh()
        third = _flow(headers={"Authorization": f"Bearer {token}"})
        await gate.request(third)
        gate.done()
    assert (third.response.status_code, third.response.json()["code"]) == (403, "token_revoked")
    assert len(calls) == 1


async def test_expired_revocations_are_ignored(aws: dict[str, Any], policy_file: Path) -> None:
    signer = Signer()
    gate = _gate(aws, Fetcher(signer))
    token = signer.mint(jti="a" * 32)
    _revoke(aws, "a" * 32, time.time() - 10)  # moto never deletes TTL items
    with taddons.context(gate) as tctx:
        _configure(tctx, gate, policy_file)
        gate.running()
        f = _flow(headers={"Authorization": f"Bearer {token}"})
        await gate.request(f)
        gate.done()
    assert f.response is None


async def test_stale_revocation_list_fails_closed(aws: dict[str, Any], policy_file: Path) -> None:
    signer = Signer()
    mono = Clock()
    gate = _gate(aws, Fetcher(signer), mono)
    token = signer.mint()
    with taddons.context(gate) as tctx:
        _configure(tctx, gate, policy_file, jitgate_revocation_refresh="1", jitgate_revocation_staleness="3")
        gate.running()
        gate.done()  # stop the background thread: the list only ages from here
        ok = _flow(headers={"Authorization": f"Bearer {token}"})
        await gate.request(ok)
        mono.t += 3.5
        stale = _flow(headers={"Authorization": f"Bearer {token}"})
        await gate.request(stale)
        gate.revocations.dynamodb = None  # the next refresh fails: the list stays stale
        assert not gate.revocations.refresh()
        still = _flow(headers={"Authorization": f"Bearer {token}"})
        await gate.request(still)
    assert ok.response is None
    for f in (stale, still):
        assert (f.response.status_code, f.response.json()["code"]) == (503, "revocation_unavailable")


async def test_unknown_kid_refetches_jwks_rate_limited(aws: dict[str, Any], policy_file: Path) -> None:
    old, rotated = Signer("k-old"), Signer("k-new")
    fetcher = Fetcher(old)
    mono = Clock()
    gate = _gate(aws, fetcher, mono)
    with taddons.context(gate) as tctx:
        _configure(tctx, gate, policy_file, jitgate_jwks_refetch_interval="10", jitgate_revocation_staleness="60")
        gate.running()
        gate.done()
        assert fetcher.calls == 1
        mono.t += 11
        fetcher.signers.append(rotated)
        f = _flow(headers={"Authorization": f"Bearer {rotated.mint()}"})
        await gate.request(f)
        assert f.response is None and fetcher.calls == 2
        stranger = Signer("k-unknown")
        g = _flow(headers={"Authorization": f"Bearer {stranger.mint()}"})
        await gate.request(g)
        assert fetcher.calls == 2  # within the interval: no refetch
        assert g.response.json()["code"] == "invalid_token"


async def test_unknown_kid_with_broker_down_is_503(aws: dict[str, Any], policy_file: Path) -> None:
    signer = Signer()
    fetcher = Fetcher(signer, fail=True)
    gate = _gate(aws, fetcher)
    with taddons.context(gate) as tctx:
        _configure(tctx, gate, policy_file)
        gate.running()
        gate.done()
        f = _flow(headers={"Authorization": f"Bearer {signer.mint()}"})
        await gate.request(f)
    assert (f.response.status_code, f.response.json()["code"]) == (503, "jwks_unavailable")


@pytest.mark.parametrize(
    ("over", "fragment"),
    [
        ({"jitgate_policy": ""}, "jitgate_policy"),
        ({"jitgate_policy": "/nonexistent/policy.yaml"}, "cannot read"),
        ({"jitgate_jwks_url": "ftp://broker"}, "jitgate_jwks_url"),
        ({"jitgate_jwks_url": "https://broker.test/keys"}, "jitgate_issuer"),
        ({"jitgate_table": ""}, "jitgate_table"),
        ({"jitgate_revocation_refresh": "0"}, "positive"),
        ({"jitgate_revocation_refresh": "soon"}, "number of seconds"),
        ({"jitgate_revocation_refresh": "nan"}, "finite"),
        ({"jitgate_jwks_refetch_interval": "-1"}, "non-negative"),
        ({"jitgate_revocation_staleness": "1"}, "longer"),
    ],
)
async def test_bad_options_stop_the_start(
    aws: dict[str, Any], policy_file: Path, over: dict[str, Any], fragment: str
) -> None:
    gate = _gate(aws, Fetcher(Signer()))
    with taddons.context(gate) as tctx:
        _configure(tctx, gate, policy_file)  # good first, so a rollback lands on good values
        with pytest.raises(exceptions.OptionsError, match=fragment):
            _configure(tctx, gate, policy_file, **over)


async def test_bad_policy_names_the_line(aws: dict[str, Any], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nissuers: []\nconnections: {}\n")
    gate = _gate(aws, Fetcher(Signer()))
    with taddons.context(gate) as tctx:
        (tmp_path / "good.yaml").write_text(POLICY)
        _configure(tctx, gate, tmp_path / "good.yaml")
        with pytest.raises(exceptions.OptionsError, match="line 2"):
            _configure(tctx, gate, bad)


def test_issuer_defaults_to_the_jwks_origin() -> None:
    assert JWKS_URL.removesuffix("/.well-known/jwks.json") == ISSUER


async def test_withdrawn_key_stops_cached_tokens(aws: dict[str, Any], policy_file: Path) -> None:
    old, new = Signer("k-old"), Signer("k-new")
    fetcher = Fetcher(old, new)
    gate = _gate(aws, fetcher)
    token = old.mint()
    with taddons.context(gate) as tctx:
        _configure(tctx, gate, policy_file, jitgate_jwks_refresh="300")
        gate.running()
        gate.done()
        first = _flow(headers={"Authorization": f"Bearer {token}"})
        await gate.request(first)
        assert first.response is None  # verified and cached
        fetcher.signers = [new]  # the broker withdrew k-old
        assert gate.refresh_keys()
        again = _flow(headers={"Authorization": f"Bearer {token}"})
        await gate.request(again)
        fresh = _flow(headers={"Authorization": f"Bearer {new.mint()}"})
        await gate.request(fresh)
    assert (again.response.status_code, again.response.json()["code"]) == (401, "invalid_token")
    assert fresh.response is None


async def test_bad_tokens_are_remembered_but_not_yet_valid_ones_are_not(
    aws: dict[str, Any], policy_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trusted, forger = Signer(), Signer()
    gate = _gate(aws, Fetcher(trusted))
    calls: list[int] = []
    real = token_intake.verify_token
    monkeypatch.setattr(token_intake, "verify_token", lambda *a, **k: calls.append(1) or real(*a, **k))
    forged = forger.mint()
    early = trusted.mint(nbf=int(time.time()) + 3600, exp=int(time.time()) + 7200)
    codes = []
    with taddons.context(gate) as tctx:
        _configure(tctx, gate, policy_file)
        gate.running()
        gate.done()
        for token in (forged, forged, early, early):
            f = _flow(headers={"Authorization": f"Bearer {token}"})
            await gate.request(f)
            codes.append(f.response.json()["code"])
    assert codes == ["invalid_token", "invalid_token", "token_not_yet_valid", "token_not_yet_valid"]
    assert len(calls) == 3  # the forged token was checked once


def test_mitmproxys_onboarding_app_is_switched_off() -> None:
    # Its page and CA download at http://mitm.it answer before the chain runs, without a token.
    from mitmproxy.addons.onboarding import Onboarding

    gate, onboarding = TokenGate(), Onboarding()
    with taddons.context(onboarding, gate) as tctx:
        assert tctx.options.onboarding is True  # mitmproxy's default
        gate.configure({"onboarding"})
        assert tctx.options.onboarding is False
        tctx.options.update(onboarding=True)  # set again at run time (`--set`, mitmweb): off again
        assert tctx.options.onboarding is False
