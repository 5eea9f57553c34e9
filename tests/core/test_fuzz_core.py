"""hypothesis-driven fuzzing of the policy loader and the token checks: no crash, only our errors."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jitgate.errors import InvalidToken, PolicyError
from jitgate.policy import parse_policy
from jitgate.token import KeySet, check_claims, public_jwk, verify_token

EXAMPLE = (Path(__file__).resolve().parents[2] / "infra" / "policy.example.yaml").read_text()
KEYS = KeySet.from_jwks({"keys": [public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), "k1")]})

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_policy_loader_any_text(text: str) -> None:
    try:
        parse_policy(text)
    except PolicyError as exc:
        assert "line" in exc.message


def _mutate(doc: Any, path: list[Any], value: Any) -> Any:
    if not path:
        return value
    head, *rest = path
    if isinstance(doc, dict) and doc:
        key = list(doc)[head % len(doc)]
        return {**doc, key: _mutate(doc[key], rest, value)}
    if isinstance(doc, list) and doc:
        i = head % len(doc)
        return [*doc[:i], _mutate(doc[i], rest, value), *doc[i + 1 :]]
    return value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=5), json_values)
def test_policy_loader_mutated_example(path: list[int], value: Any) -> None:
    """Replace one node of the example policy with anything: a valid policy or a PolicyError, never a crash."""
    doc = _mutate(yaml.safe_load(EXAMPLE), path, value)
    try:
        parse_policy(yaml.safe_dump(doc))
    except PolicyError as exc:
        assert exc.message.startswith("<policy>: line ")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["iss", "aud", "sub", "iat", "nbf", "exp", "jti", "conn", "scope",
                                        "limits", "mask", "job", "apv", "x"]), json_values))
def test_check_claims_only_raises_invalid_token(raw: dict[str, Any]) -> None:
    with contextlib.suppress(InvalidToken):
        check_claims(raw, now=1_800_000_000, issuer="https://broker.test")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | st.builds(lambda a, b, c: f"{a}.{b}.{c}", st.text(max_size=80),
                                          st.text(max_size=80), st.text(max_size=80)))
def test_verify_token_only_raises_invalid_token(token: str) -> None:
    with contextlib.suppress(InvalidToken):
        verify_token(token, KEYS, now=1_800_000_000, issuer="https://broker.test")


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_verify_token_with_crafted_headers(header: dict[str, Any]) -> None:
    import base64

    def b64(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    token = f"{b64(header)}.{b64({'sub': 'x'})}.{b64('sig')}"
    try:
        verify_token(token, KEYS, now=1_800_000_000, issuer="https://broker.test")
    except InvalidToken:
        pass
    else:
        raise AssertionError("an unsigned token was accepted")
