"""jitgate.token_intake: finding the token in plain header mappings, and the verification cache."""

from __future__ import annotations

import time
from collections.abc import Iterable

import pytest

from jitgate.devstack.policy import policy_dict
from jitgate.errors import InvalidToken, KeysUnavailable, TokenExpired, TokenNotYetValid, UnknownKeyId
from jitgate.policy import Policy
from jitgate.token import DEFAULT_LEEWAY, Claims, KeySet, Limits, Scope
from jitgate.token_intake import TokenVerifier, VerifiedTokens, strip_copies, take_token, token_sha256
from tests.addon.jit_fixtures import ISSUER, JWKS_URL, Signer, anyio_backend_fixture  # noqa: F401 (fixture)

POLICY = Policy.model_validate(policy_dict("https://issuer.test"))
TOKEN = "eyJhbGciOiJFUzI1NiJ9.e30.sig"


class _Headers(dict[str, str]):
    """A header mapping that may repeat a name, as an HTTP message's does."""

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        super().__init__(fields)
        self.fields = fields

    def items(self, multi: bool = False) -> Iterable[tuple[str, str]]:  # type: ignore[override]
        return list(self.fields) if multi else list(super().items())

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.fields = [(k, v) for k, v in self.fields if k != key]


def test_take_token_from_a_plain_mapping_strips_every_place_it_looks() -> None:
    conns = list(POLICY.connections.values())
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    assert take_token(headers, conns) == TOKEN and headers == {"Content-Type": "application/json"}
    assert take_token({"Authorization": "Bearer sk-not-a-jwt"}, conns) is None


def test_strip_copies_removes_every_header_holding_the_token() -> None:
    headers = _Headers([("X-Debug", f"t={TOKEN}"), ("X-Debug", "other"), ("X-Keep", "fine"), ("X-Copy", TOKEN)])
    strip_copies(headers, TOKEN)
    assert headers.fields == [("X-Keep", "fine")]
    assert token_sha256(TOKEN) != TOKEN and len(token_sha256(TOKEN)) == 64


def _claims(exp: int) -> Claims:
    return Claims(
        iss="https://b.test", aud="jitgate", sub="s", iat=1, nbf=1, exp=exp, jti="j" * 16, conn="cohere-test",
        scope=Scope(operations=("rerank",)), limits=Limits(), mask="default",
    )


def test_accepted_claims_are_served_until_exp_plus_leeway() -> None:
    cache = VerifiedTokens()
    claims = _claims(exp=1000)
    assert cache.lookup("d", 0.0) is None
    cache.accepted("d", claims, 0.0)
    assert cache.lookup("d", 1000 + DEFAULT_LEEWAY - 1) is claims
    with pytest.raises(TokenExpired):
        cache.lookup("d", 1000 + DEFAULT_LEEWAY)
    assert cache.lookup("d", 0.0) is None  # dropped once expired


@pytest.mark.parametrize(("err", "kept"), [(TokenExpired("stale"), True), (InvalidToken("bad"), True),
                                           (UnknownKeyId("kid"), False), (TokenNotYetValid("early"), False)])
def test_lasting_rejections_are_remembered_passing_ones_are_not(err: InvalidToken, kept: bool) -> None:
    cache = VerifiedTokens()
    cache.rejected("d", err)
    if kept:
        with pytest.raises(type(err)):
            cache.lookup("d", 0.0)
    else:
        assert cache.lookup("d", 0.0) is None
    cache.clear()
    assert cache.lookup("d", 0.0) is None


def test_the_cache_stays_bounded_and_prunes_expired_entries_first() -> None:
    cache = VerifiedTokens(max_size=2)
    cache.accepted("old", _claims(exp=10), 0.0)
    cache.accepted("live", _claims(exp=10_000), 0.0)
    cache.accepted("new", _claims(exp=10_000), 100.0)  # full: the expired one goes
    assert cache.lookup("live", 100.0) is not None and cache.lookup("new", 100.0) is not None
    assert cache.lookup("old", 0.0) is None


class _Keys:
    """A JWKS endpoint stand-in: hands out the current signer's key set, or fails."""

    def __init__(self, signer: Signer) -> None:
        self.signer: Signer | None = signer
        self.fetched: list[str] = []

    def __call__(self, url: str) -> KeySet:
        self.fetched.append(url)
        if self.signer is None:
            raise ConnectionError("broker down")
        return self.signer.keyset()


def _verifier(keys: _Keys, mono: list[float]) -> TokenVerifier:
    v = TokenVerifier(keys, monotonic=lambda: mono[0])
    v.configure(JWKS_URL, ISSUER, refetch_interval=10, refresh_interval=300)
    return v


@pytest.mark.anyio
async def test_a_verified_token_is_cached_and_a_new_key_set_drops_the_cache() -> None:
    signer, mono = Signer(), [0.0]
    keys = _Keys(signer)
    v = _verifier(keys, mono)
    assert v.refresh() and keys.fetched == [JWKS_URL]
    token = signer.mint()
    digest = token_sha256(token)
    claims = await v.verify(token, digest)
    assert v.results.lookup(digest, time.time()) == claims
    v.routine()  # not due
    assert len(keys.fetched) == 1
    keys.signer = Signer(kid="k2")  # the broker withdrew the old key
    mono[0] = 300.0
    v.routine()
    assert len(keys.fetched) == 2 and v.results.lookup(digest, time.time()) is None
    with pytest.raises(InvalidToken):
        await v.verify(token, digest)  # its kid is unknown now, and the refetch is rate-limited


@pytest.mark.anyio
async def test_an_unknown_kid_refetches_at_most_once_per_interval() -> None:
    old, new, mono = Signer(), Signer(kid="k2"), [0.0]
    keys = _Keys(old)
    v = _verifier(keys, mono)
    v.refresh()
    keys.signer = new
    mono[0] = 10.0
    token = new.mint()
    assert (await v.verify(token, token_sha256(token))).jti and len(keys.fetched) == 2
    other = Signer(kid="k3").mint()
    with pytest.raises(UnknownKeyId):
        await v.verify(other, token_sha256(other))
    assert len(keys.fetched) == 2  # within the interval: no fetch


@pytest.mark.anyio
async def test_keys_that_cannot_be_fetched_are_unavailable_not_a_pass() -> None:
    signer, mono = Signer(), [0.0]
    keys = _Keys(signer)
    keys.signer = None
    v = _verifier(keys, mono)
    assert not v.refresh()
    token = signer.mint()
    with pytest.raises(KeysUnavailable):
        await v.verify(token, token_sha256(token))
    mono[0] = 10.0
    with pytest.raises(KeysUnavailable):
        await v.verify(token, token_sha256(token))  # refetched, failed again
    assert len(keys.fetched) == 2
