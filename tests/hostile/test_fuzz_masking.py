"""hypothesis against the masking engine with shapes the corpus does not make: arbitrary JSON trees
(any nesting, unicode, escapes, numbers, keys) with provider secrets planted in random leaves, and
arbitrary bytes. No crash, every planted secret masked, and the masked JSON still parses with the
same shape. (tests/inspect/test_properties.py covers generated rerank bodies; the policy loader and
claims checks are fuzzed in tests/core/test_fuzz_core.py.)"""

from __future__ import annotations

import json
import random
import secrets
import string
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jitgate.inspect import PII_TYPES, Scanner
from tests.inspect import corpus

_SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCANNERS = {engine: Scanner(secrets.token_bytes(32), engine=engine) for engine in ("hyperscan", "re")}
# Single-line provider formats: a multi-line PEM block is no JSON leaf a client would send unescaped.
TYPES = sorted(t for t in corpus.PREFIXED if "pem" not in t and "private_key" not in t)

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
keys = st.text(alphabet=string.ascii_letters + "_", max_size=12)  # PII-free: masked keys would change the shape
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=30,
)


def _plant(tree: Any, rng: random.Random, planted: list[str]) -> Any:
    """Replace some leaves with text holding a secret (always at least one, at the root if need be)."""
    if isinstance(tree, dict):
        return {k: _plant(v, rng, planted) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_plant(v, rng, planted) for v in tree]
    if rng.random() < 0.3:
        value = corpus.PREFIXED[rng.choice(TYPES)](rng)
        planted.append(value)
        around = str(tree) if isinstance(tree, str) else ""
        return f"{around[:10]} key {value} {around[10:]}"
    return tree


def _numbers_masked(before: Any, after: Any) -> Any:
    """`before` with each number that `after` shows as a masking marker turned into that marker."""
    if isinstance(before, dict) and isinstance(after, dict):
        return {k: _numbers_masked(v, after.get(k)) for k, v in before.items()}
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [_numbers_masked(b, a) for b, a in zip(before, after, strict=True)]
    if isinstance(before, int | float) and not isinstance(before, bool) and isinstance(after, str):
        return after if after.startswith("[REDACTED:") else before
    return before


def _shape(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _shape(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_shape(v) for v in tree]
    return type(tree).__name__


@_SETTINGS
@given(tree=trees, seed=st.integers(min_value=0, max_value=2**32 - 1), ascii_only=st.booleans())
def test_arbitrary_json_masks_every_planted_secret_and_stays_json(tree: Any, seed: int, ascii_only: bool) -> None:
    rng = random.Random(seed)
    planted: list[str] = []
    doc = {"query": "q", "documents": [_plant(tree, rng, planted)]}
    if not planted:
        value = corpus.PREFIXED[rng.choice(TYPES)](rng)
        planted.append(value)
        doc["documents"].append(f"key {value}")
    raw = json.dumps(doc, ensure_ascii=ascii_only).encode()
    for engine, scanner in SCANNERS.items():
        masked = scanner.scan(raw, pii=PII_TYPES, json_strings=True).masked(raw)
        out = json.loads(masked)
        # Strings stay strings, keys stay; a number holding PII (a card number, say) becomes its
        # quoted marker, the only way to mask it and keep the body JSON.
        assert _shape(out["documents"]) == _shape(_numbers_masked(doc["documents"], out["documents"])), engine
        assert isinstance(out, dict) and len(out["documents"]) == len(doc["documents"])
        for value in planted:
            assert not corpus.occurrences(masked, value), (engine, value)


@_SETTINGS
@given(data=st.binary(max_size=2000), json_text=st.booleans())
def test_arbitrary_bytes_never_crash_the_scanner(data: bytes, json_text: bool) -> None:
    for scanner in SCANNERS.values():
        result = scanner.scan(data, pii=PII_TYPES, json_strings=json_text)
        out = result.masked(data)
        assert isinstance(out, bytes)
        if not result.edits:
            assert out == data
