"""The OIDC verifier against a real issuer on loopback: caching, refetch, rotation, fetch rules."""

from __future__ import annotations

from collections.abc import Iterator

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from broker.oidc import IssuerKeys, OidcVerifier, check_fetch_url
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.errors import InvalidToken, IssuerUnavailable
from jitgate.policy import Issuer
from tests.broker.conftest import Clock

NOW = 1_800_000_000.0


@pytest.fixture
def idp() -> Iterator[OidcIssuer]:
    with OidcIssuer() as iss:
        yield iss


def _verifier(issuer: Issuer, mono: Clock) -> OidcVerifier:
    def keys(i: Issuer) -> IssuerKeys:
        return IssuerKeys(i, clock=mono, lifespan=300, min_refresh_interval=30)

    return OidcVerifier([issuer], keys_factory=keys)


def test_keys_are_cached_and_unknown_kids_refetch_at_most_every_interval(idp: OidcIssuer) -> None:
    mono = Clock(1000.0)
    v = _verifier(Issuer(issuer=idp.url, audience="jitgate"), mono)
    for _ in range(5):
        assert v.verify(idp.mint("a", now=NOW), now=NOW).subject == "a"
    assert (idp.discovery_requests, idp.jwks_requests) == (1, 1)
    unknown = jwt.encode(idp.claims("a", now=NOW), idp.private_key(), algorithm="RS256", headers={"kid": "zz"})
    for _ in range(3):
        with pytest.raises(InvalidToken):
            v.verify(unknown, now=NOW)
    assert idp.jwks_requests == 1  # within the interval: no refetch for an attacker's kid
    mono.now += 31
    with pytest.raises(InvalidToken):
        v.verify(unknown, now=NOW)
    assert idp.jwks_requests == 2


def test_a_rotated_in_key_is_picked_up(idp: OidcIssuer) -> None:
    mono = Clock(1000.0)
    v = _verifier(Issuer(issuer=idp.url, audience="jitgate"), mono)
    v.verify(idp.mint("a", now=NOW), now=NOW)
    idp.add_key()
    mono.now += 31
    assert v.verify(idp.mint("b", now=NOW), now=NOW).subject == "b"


def test_configured_jwks_uri_skips_discovery(idp: OidcIssuer) -> None:
    v = _verifier(Issuer(issuer=idp.url, audience="jitgate", jwks_uri=f"{idp.url}/jwks.json"), Clock(1000.0))
    assert v.verify(idp.mint("a", {"groups": ["x"]}, now=NOW), now=NOW).claims["groups"] == ["x"]
    assert idp.discovery_requests == 0


def test_audience_may_be_a_list(idp: OidcIssuer) -> None:
    v = _verifier(Issuer(issuer=idp.url, audience="jitgate"), Clock(1000.0))
    assert v.verify(idp.mint("a", aud=["other", "jitgate"], now=NOW), now=NOW).subject == "a"
    with pytest.raises(InvalidToken):
        v.verify(idp.mint("a", aud=["other"], now=NOW), now=NOW)


def test_algorithms_are_limited_to_the_issuer_config(idp: OidcIssuer) -> None:
    v = _verifier(Issuer(issuer=idp.url, audience="jitgate", algorithms=("ES256",)), Clock(1000.0))
    with pytest.raises(InvalidToken):
        v.verify(idp.mint("a", now=NOW), now=NOW)


def test_es256_token_against_an_rsa_key_is_refused(idp: OidcIssuer) -> None:
    v = _verifier(Issuer(issuer=idp.url, audience="jitgate"), Clock(1000.0))
    token = jwt.encode(idp.claims("a", now=NOW), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                       headers={"kid": idp.kid})
    with pytest.raises(InvalidToken):
        v.verify(token, now=NOW)


@pytest.mark.parametrize(
    ("now", "ok"), [(NOW - 29, True), (NOW - 31, False), (NOW + 300 + 29, True), (NOW + 300 + 31, False)]
)
def test_small_leeway_around_the_validity_window(idp: OidcIssuer, now: float, ok: bool) -> None:
    v = _verifier(Issuer(issuer=idp.url, audience="jitgate"), Clock(1000.0))
    token = idp.mint("a", now=NOW, ttl=300)
    if ok:
        assert v.verify(token, now=now).subject == "a"
    else:
        with pytest.raises(InvalidToken):
            v.verify(token, now=now)


def test_discovery_naming_another_issuer_is_refused(idp: OidcIssuer) -> None:
    other = OidcIssuer().start()
    try:
        # Trust `other`'s URL, but make its discovery document point at itself under another name.
        v = _verifier(Issuer(issuer=other.url + "/", audience="jitgate"), Clock(1000.0))
        token = other.mint("a", {"iss": other.url + "/"}, now=NOW)
        with pytest.raises(IssuerUnavailable):
            v.verify(token, now=NOW)
    finally:
        other.stop()


def test_unreachable_issuer_is_unavailable_not_a_pass(idp: OidcIssuer) -> None:
    url = idp.url
    token = idp.mint("a", now=NOW)
    idp.stop()
    v = _verifier(Issuer(issuer=url, audience="jitgate"), Clock(1000.0))
    with pytest.raises(IssuerUnavailable):
        v.verify(token, now=NOW)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://token.actions.githubusercontent.com/.well-known/jwks", True),
        ("http://127.0.0.1:8080/jwks.json", True),
        ("http://localhost/jwks.json", True),
        ("http://[::1]:9/jwks", True),
        ("http://issuer.example.com/jwks.json", False),
        ("file:///etc/passwd", False),
        ("ftp://127.0.0.1/jwks", False),
        ("https:///nohost", False),
    ],
)
def test_keys_are_fetched_over_https_or_loopback_only(url: str, ok: bool) -> None:
    if ok:
        assert check_fetch_url(url) == url
    else:
        with pytest.raises(ValueError):
            check_fetch_url(url)


def test_cached_keys_outlive_an_issuer_outage_only_up_to_a_bound(idp: OidcIssuer) -> None:
    mono = Clock(1000.0)
    keys = IssuerKeys(Issuer(issuer=idp.url, audience="jitgate"), clock=mono, lifespan=300, max_stale=3600)
    v = OidcVerifier([keys.issuer], keys_factory=lambda _i: keys)
    token = idp.mint("a", now=NOW, ttl=100_000)
    assert v.verify(token, now=NOW).subject == "a"
    idp.stop()
    mono.now += 301  # stale, the refresh fails: the cached key still verifies
    assert v.verify(token, now=NOW).subject == "a"
    mono.now += 3600  # past the bound: fail closed
    with pytest.raises(IssuerUnavailable):
        v.verify(token, now=NOW)
