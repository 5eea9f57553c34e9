"""The shortcuts of the block decision and of masking return exactly what the plain computation does.

Each shortcut is checked against the computation it replaces: the entropy bounds against the
entropy, the local "inside a JSON string" test against matching every string from the start,
markers found by the engines against `MARKER.finditer`, the Hyperscan patterns that report
fewer false starts against the pure-`re` engine, and the block decision against a raw,
secrets-only scan (then the decoding pass when raw is clean).
"""

from __future__ import annotations

import functools
import json
import math
import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jitgate.inspect import Scanner
from jitgate.inspect import scanner as scanner_module
from jitgate.inspect import validators as v
from jitgate.inspect.engine import HyperscanEngine
from jitgate.inspect.masking import MARKER
from jitgate.inspect.rules import Rule
from tests.inspect import corpus

_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# The string pattern before the shortcut (the reference the local test is checked against).
_PLAIN_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)


# -- entropy bounds --------------------------------------------------------------------------------


@given(
    value=st.one_of(
        st.binary(min_size=0, max_size=300),
        st.text(alphabet="ab", max_size=64).map(str.encode),
        st.text(alphabet="0123456789abcdef", min_size=8, max_size=64).map(str.encode),
    ),
    bits=st.sampled_from([0.0, 1.0, 2.5, 3.0, 3.5, 4.0, 5.0, 8.0]),
)
@settings(max_examples=500)
def test_entropy_at_least_is_the_entropy_compared(value: bytes, bits: float) -> None:
    assert v.entropy_at_least(value, bits) is (v.entropy(value) >= bits)


@pytest.mark.parametrize("n", [8, 9, 12, 14, 20, 32, 40, 64, 128])
def test_entropy_at_least_at_the_generic_threshold(n: int) -> None:
    """Values built to sit near `min(3.0, 0.8 * log2(n))`, where the bounds must not decide wrongly."""
    bits = min(3.0, 0.8 * math.log2(n))
    rng = random.Random(n)
    for k in range(1, min(n, 40) + 1):
        for _ in range(20):
            alphabet = rng.sample(corpus.ALNUM, k)
            value = ("".join(alphabet) + "".join(rng.choices(alphabet, k=n - k))).encode()
            assert v.entropy_at_least(value, bits) is (v.entropy(value) >= bits)


# -- inside a JSON string --------------------------------------------------------------------------

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet='0123456789 .,:-+eE[]{}"\\/abcxyz\n\t', max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)


def _in_string(buf: bytes) -> list[bool]:
    inside = [False] * len(buf)
    for m in _PLAIN_STRING.finditer(buf):
        inside[m.start() : m.end()] = [True] * (m.end() - m.start())
    return inside


@_SETTINGS
@given(value=_json_values, indent=st.sampled_from([None, 1]))
def test_clearly_in_string_only_inside_strings(value: object, indent: int | None) -> None:
    buf = json.dumps(value, indent=indent).encode()
    inside = _in_string(buf)
    for pos in range(len(buf)):
        if scanner_module._clearly_in_string(buf, pos):
            assert inside[pos], (buf, pos)


def _quote_bare_plain(buf: bytes, edits: list[scanner_module.Edit]) -> list[scanner_module.Edit]:
    """`_quote_bare_edits` as it was: every string matched from the start of the text."""
    import bisect

    spans = [(m.start(), m.end()) for m in _PLAIN_STRING.finditer(buf)]
    starts = [start for start, _ in spans]
    out: list[scanner_module.Edit] = []
    covered = -1
    for e in sorted(edits, key=lambda e: e.start):
        i = bisect.bisect_right(starts, e.start) - 1
        if i >= 0 and spans[i][0] <= e.start < spans[i][1]:
            out.append(e)
            continue
        start, end = e.start, e.end
        while start > 0 and buf[start - 1] in scanner_module._NUMBER_CHARS:
            start -= 1
        while end < len(buf) and buf[end] in scanner_module._NUMBER_CHARS:
            end += 1
        if start < covered:
            continue
        out.append(scanner_module.Edit(start, end, b'"' + e.replacement + b'"', e.anchor))
        covered = end
    return out


@_SETTINGS
@given(value=_json_values, data=st.data())
def test_quote_bare_edits_as_before_on_json(value: object, data: st.DataObject) -> None:
    buf = json.dumps(value).encode()
    digits = [m.span() for m in re.finditer(rb"[0-9]{2,}", buf)]
    if not digits:
        return
    picked = data.draw(st.lists(st.sampled_from(digits), unique=True, max_size=6))
    edits = [scanner_module.Edit(a, b, b"[REDACTED:card:0123456789]") for a, b in picked]
    assert scanner_module._quote_bare_edits(buf, edits) == _quote_bare_plain(buf, edits)


def test_pii_masked_in_numbers_and_in_strings_that_look_like_numbers(scanner: Scanner) -> None:
    card = "4111111111111111"
    raw = json.dumps({"a": f", {card}, ", "b": [1, int(card)], "c": f"[{card}]", "d": f": {card}}}"}).encode()
    result = scanner.scan(raw, pii=("card",), json_strings=True)
    out = json.loads(result.masked(raw))
    assert len(result.findings) == 4
    assert out["a"].startswith(", [REDACTED:card:") and out["b"][1].startswith("[REDACTED:card:")
    assert out["c"].startswith("[[REDACTED:card:") and out["d"].startswith(": [REDACTED:card:")


# -- markers found by the engines ------------------------------------------------------------------


def test_engines_find_markers_as_marker_finditer(scanner: Scanner) -> None:
    rng = random.Random(3)
    once = scanner.scan(corpus.rerank_body(11, documents=12, secret_rate=0.8).encode(), json_strings=True)
    raw = once.masked(corpus.rerank_body(11, documents=12, secret_rate=0.8).encode())
    tag = bytes(rng.choices(b"0123456789abcdef", k=10))
    raw += b" [REDACTED:x:0123] [REDACTED:ok_type:" + tag + b"] [REDACTED:[REDACTED:a:" + tag + b"]"
    found = [(c.start, c.end) for c in scanner._candidates(raw, (), ()) if c.kind == "marker"]
    assert found == [m.span() for m in MARKER.finditer(raw)] and len(found) >= 3


def test_may_find_ignores_markers_alone(scanner: Scanner) -> None:
    assert not scanner.may_find([b"[REDACTED:github_pat:0123456789]", b"keep-alive"])


# -- Hyperscan patterns that report fewer false starts ---------------------------------------------

_GENERIC_PARTS = [
    "password",
    "PASSWORD",
    "client_secret",
    "secret_key",
    "secret",
    "api_key",
    "token",
    "access_token",
    "credentials",
    "pwd",
    "passwd",
    ":",
    "=",
    ":=",
    "=>",
    " ",
    "\t",
    '"',
    "'",
    "\\",
    '\\"',
    "\n",
    "(",
    ")",
    "get_password()",
    "abc",
    "x1Y2z3W4v5",
    "EXAMPLE",
    "${TOKEN}",
    "Zq8",
    "-",
    "_",
    ",",
    ";",
    "SK",
    "sk-",
    "0123456789abcdef",
    "T3BlbkFJ",
    "https://hooks.slack.com/",
    "https://discord.com/api/webhooks/",
    "services/T0123ABCD/B0123ABCD/",
    "123456789012345678/",
]


@_SETTINGS
@given(parts=st.lists(st.sampled_from(_GENERIC_PARTS), max_size=40), seed=st.integers(0, 2**16))
def test_both_engines_agree_around_keywords_and_prefixes(
    hs_scanner: Scanner, re_scanner: Scanner, parts: list[str], seed: int
) -> None:
    rng = random.Random(seed)
    for i in range(len(parts)):
        if rng.random() < 0.2:
            parts[i] = "".join(rng.choices(corpus.ALNUM + "-_", k=rng.randint(1, 70)))
    raw = "".join(parts).encode()
    assert hs_scanner.contains_secret(raw).findings == re_scanner.contains_secret(raw).findings
    assert hs_scanner.scan(raw).findings == re_scanner.scan(raw).findings


# -- the block decision ----------------------------------------------------------------------------


def _block_reference(scanner: Scanner, raw: bytes) -> list[object]:
    """Raw secrets first (no decoding, no PII); when there are none, what decoding finds."""
    raw_found = scanner.scan(raw, decode=False).findings
    if raw_found:
        return list(raw_found)
    return list(scanner.scan(raw, json_strings=True).findings)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), rate=st.sampled_from([0.0, 0.01, 0.2, 0.8]))
def test_block_decision_is_the_raw_secret_scan(
    hs_scanner: Scanner, re_scanner: Scanner, seed: int, rate: float
) -> None:
    body = corpus.rerank_body(seed, documents=12, secret_rate=rate, pii_rate=0.5)
    raw = body.encode()
    found = hs_scanner.contains_secret(raw).findings
    assert found == _block_reference(hs_scanner, raw)
    assert found == re_scanner.contains_secret(raw).findings
    assert all(f.kind == "secret" for f in found)
    for p in body.planted:  # the generator plants secrets where raw scanning sees them
        for a, b in corpus.occurrences(raw, p.value) if p.kind == "secret" else ():
            assert any(f.start <= a and b <= f.end for f in found), p.type


# -- placeholders ----------------------------------------------------------------------------------


def _not_placeholder_plain(value: bytes) -> bool:
    flat = re.compile(b"|".join(re.escape(p) for p in v._PLACEHOLDERS))
    return flat.search(value) is None and v._TEMPLATE.fullmatch(value) is None and len(set(value)) > 3


_PLACEHOLDER_BITS = [
    *(p.decode() for p in v._PLACEHOLDERS),
    "a",
    "b",
    "A",
    "_",
    "-",
    "0",
    "1",
    "{pw}",
    "$X",
    "%s",
    "..",
    "<",
]


@given(parts=st.lists(st.sampled_from(_PLACEHOLDER_BITS) | st.text(max_size=6), max_size=8))
@settings(max_examples=500)
def test_not_placeholder_as_the_plain_checks(parts: list[str]) -> None:
    value = "".join(parts).encode()
    assert v.not_placeholder(value) is _not_placeholder_plain(value)


@given(
    literals=st.lists(st.binary(min_size=1, max_size=4), min_size=1, max_size=8, unique=True),
    text=st.binary(max_size=40),
)
def test_grouped_alternation_finds_what_the_flat_one_does(literals: list[bytes], text: bytes) -> None:
    flat = re.compile(b"|".join(re.escape(lit) for lit in literals))
    assert (v._alternation(tuple(literals)).search(text) is None) is (flat.search(text) is None)


# -- the generic-secret check ----------------------------------------------------------------------

_PLAIN_CLASSES = (re.compile(rb"[a-z]"), re.compile(rb"[A-Z]"), re.compile(rb"[0-9]"), re.compile(rb"[^A-Za-z0-9]"))


def _generic_secret_plain(value: bytes) -> bool:
    """`validators.generic_secret` as first written: the entropy computed, four separate regexes."""
    if len(value) < 8 or v.entropy(value) < min(3.0, 0.8 * math.log2(len(value))):
        return False
    if any(p.fullmatch(value) for p in (v._DOTTED_IDENT, v._UPPER_IDENT, v._WORDS, v._NUMBER, v._CALL)):
        return False
    return sum(1 for cls in _PLAIN_CLASSES if cls.search(value)) >= 2


_VALUE_BITS = ["a", "Z", "7", "_", "-", ".", "()", "e5", "-1", "Ab", "xY9", "\x00", "é", "client.get", "API_KEY"]


@given(
    value=st.one_of(
        st.lists(st.sampled_from(_VALUE_BITS), max_size=24).map(lambda p: "".join(p).encode()),
        st.binary(min_size=6, max_size=60),
        st.text(alphabet=corpus.ALNUM + "_-./+=", min_size=6, max_size=128).map(str.encode),
    )
)
@settings(max_examples=800)
def test_generic_secret_as_first_written(value: bytes) -> None:
    assert v.generic_secret(value) is _generic_secret_plain(value)
    assert v._two_classes(value) is (sum(1 for cls in _PLAIN_CLASSES if cls.search(value)) >= 2)


# -- the base64 probe ------------------------------------------------------------------------------


def test_run_probe_finds_a_run_of_exactly_the_length(hs_scanner: Scanner) -> None:
    from jitgate.inspect.rules import MIN_BLOB

    probe = hs_scanner._b64_probe
    assert probe is not None
    run = (corpus.ALNUM + "+/").encode() * 2
    n = MIN_BLOB
    assert not probe(b"") and not probe(b"x " + run[: n - 1] + b" y") and not probe(run[: n - 1] + b"-" + run[: n - 1])
    assert probe(run[:n]) and probe(b"pre " + run[:n]) and probe(b'"' + run + b'"')


@_SETTINGS
@given(seed=st.integers(0, 2**32 - 1), blob=st.sampled_from(["none", "short", "text", "image"]))
def test_decoding_with_and_without_the_probe(hs_scanner: Scanner, seed: int, blob: str) -> None:
    """The probe only skips the base64 rule where it cannot match: same findings, same masking."""
    import base64

    rng = random.Random(seed)
    body = corpus.rerank_body(seed, documents=6, secret_rate=0.5, pii_rate=0.3, negative_rate=0.0)
    inner = f"token: {corpus.PREFIXED['github_pat'](rng)}\n{' '.join(['note'] * rng.randint(5, 40))}".encode()
    payload = {
        "none": b"",
        "short": base64.b64encode(inner)[:60],
        "text": base64.b64encode(inner),
        "image": base64.b64encode(bytes(rng.getrandbits(8) for _ in range(300))),
    }[blob]
    docs = body.payload["documents"]
    docs.append(f"attached {payload.decode()} end")
    raw = body.encode()
    probe = hs_scanner._b64_probe
    fast = (hs_scanner.scan(raw, pii=("email",), json_strings=True), hs_scanner.contains_secret(raw))
    try:
        hs_scanner._b64_probe = None
        plain = (hs_scanner.scan(raw, pii=("email",), json_strings=True), hs_scanner.contains_secret(raw))
    finally:
        hs_scanner._b64_probe = probe
    assert fast[0].findings == plain[0].findings and fast[0].masked(raw) == plain[0].masked(raw)
    assert fast[1].findings == plain[1].findings


# -- overlap arbitration ---------------------------------------------------------------------------

_EVEN = Rule("even_first_byte", "secret", "x", validator=lambda value: value[0] % 2 == 0, placeholders_ok=True)


def _arbitrate_plain(buf: bytes, cluster: list[scanner_module._Candidate]) -> list[scanner_module._Candidate]:
    """Greedy by rank over all candidates, overlaps kept in `_Intervals` (as first written)."""
    taken = scanner_module._Intervals()
    picked = []
    for c in sorted(cluster, key=lambda c: (c.kind == "pii", c.priority, c.start - c.end, c.start)):
        if not taken.overlaps(c.start, c.end) and scanner_module._valid(buf, c):
            taken.add(c.start, c.end)
            if c.kind != "marker":
                picked.append(c)
    return sorted(picked, key=lambda c: c.start)


@given(
    spans=st.lists(
        st.tuples(
            st.integers(0, 40),
            st.integers(1, 15),
            st.sampled_from(["secret", "pii", "marker"]),
            st.integers(-9, 9),
            st.booleans(),
        ),
        min_size=2,
        max_size=7,
    )
)
@settings(max_examples=500)
def test_arbitration_as_first_written(spans: list[tuple[int, int, str, int, bool]]) -> None:
    buf = bytes(range(64))
    cluster = [
        scanner_module._Candidate(f"t{i}", kind, a, a + n, prio, a, _EVEN if checked and kind != "marker" else None)
        for i, (a, n, kind, prio, checked) in enumerate(spans)
    ]
    cluster.sort(key=lambda c: c.start)
    if any(c.start >= max(d.end for d in cluster[:i]) for i, c in enumerate(cluster) if i):
        return  # not one cluster (the resolver splits those first)
    assert scanner_module._arbitrate(buf, cluster) == _arbitrate_plain(buf, cluster)


def test_hand_written_hyperscan_patterns_of_triggered_rules_extend_the_trigger() -> None:
    """Where the start of match is used, the pattern must start where every match starts."""
    from jitgate.inspect.rules import _LOOKAROUND, RULES

    extended = [r for r in RULES if r.trigger and r.hs]
    assert {r.name for r in extended} >= {"generic_secret", "twilio_api_key", "openai_legacy_key"}
    for rule in extended:
        assert rule.hs.startswith(_LOOKAROUND.sub("", rule.trigger).replace("(?:|)", "")), rule.name
        assert rule.pattern.startswith(rule.trigger), rule.name


def test_the_probe_looks_for_runs_as_long_as_the_base64_rule_needs(hs_scanner: Scanner) -> None:
    """Long runs whatever they start with; short ones only in the base64 form of a secret prefix,
    which the scanner then decodes (a Kubernetes `Secret` holding an AWS key id)."""
    import base64
    import string

    from jitgate.inspect.rules import DECODER_RULES, SHORT_BLOB
    from tests.inspect.conftest import KEY

    base64_run = DECODER_RULES[0]
    assert base64_run.name == "base64_run"
    run = f"[A-Za-z0-9+/]{{{scanner_module.MIN_BLOB}}}"
    assert run in base64_run.pattern and run in (base64_run.hs or "")
    probe = hs_scanner._b64_probe
    assert probe is not None
    key_id = "AKIA" + "".join(random.Random(7).choices(string.ascii_uppercase + string.digits, k=16))
    encoded = base64.b64encode(key_id.encode())
    assert SHORT_BLOB <= len(encoded) < scanner_module.MIN_BLOB
    assert probe(b"data:\n  id: " + encoded + b"\n")
    assert not probe(b"data:\n  id: " + base64.b64encode(b"n" + key_id.encode()[1:]) + b"\n")
    for scanner in (hs_scanner, Scanner(KEY, engine="re")):
        found = scanner.contains_secret(b"data:\n  id: " + encoded + b"\n").findings
        assert [f.type for f in found] == ["aws_access_key_id"]
        other = base64.b64encode(key_id.lower().encode())
        assert scanner.contains_secret(b"data:\n  id: " + other + b"\n").findings == []


# -- confirm regions that start where a phone number's or an e-mail's run starts ------------------

@functools.cache
def _one_rule_engine(rule: Rule) -> HyperscanEngine:
    return HyperscanEngine([rule])


_RUN_PARTS = ["415", "555", "0132", "+44", "(020)", "7946", "0958", " ", " ", ".", "-", "(", ")", "+", ",", "\\n",
              "jane.doe", "@", "example", ".com", "x", "A", "%", "_", "\n", "2024-06-12", "06 12 34 56 78",
              "jane.doe@example.com", "a+b@mail.example.org", "+44 20 7946 0958", "(415) 555-0132",
              "221.226.113.146", "10.0.0.1", "fd35::21cc", "::ffff:198.51.100.23", ":", "DE89 3704 0044 0532 0130 00",
              "GB82WEST12345698765432", "4111 1111 1111 1111", "378282246310005", "123-45-6789", "_", "AB12"]


@_SETTINGS
@given(parts=st.lists(st.sampled_from(_RUN_PARTS), max_size=60), pad=st.integers(0, 500))
def test_pii_rules_on_hyperscan_confirm_what_finditer_finds(parts: list[str], pad: int) -> None:
    """Each PII rule on Hyperscan returns exactly `finditer`'s matches: the `hs_run` rules also
    where a run is longer than the window, numbers share one run, or the text before is long; the
    rules whose Hyperscan pattern consumes the boundary byte after a match also for the longest
    values (`221.226.113.146`)."""
    pytest.importorskip("hyperscan")
    from jitgate.inspect.rules import PII_RULES

    raw = ("word " * pad + "".join(parts)).encode()
    for rule in PII_RULES:
        engine = _one_rule_engine(rule)
        assert [m.span() for _, m in engine.matches(raw)] == [m.span() for m in rule.regex.finditer(raw)]


def _is_text_as_first_written(data: bytes) -> bool:
    head = data[:512]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:
            return False
    printable = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}
    return bool(head) and sum(1 for c in head if c in printable or c >= 0x80) >= 0.95 * len(head)


@_SETTINGS
@given(data=st.one_of(st.binary(max_size=600), st.text(max_size=600).map(str.encode),
                      st.text(alphabet="ab\x01\x7f\n", max_size=80).map(str.encode)))
def test_is_text_as_first_written(data: bytes) -> None:
    assert scanner_module._is_text(data) == _is_text_as_first_written(data)
    assert scanner_module._b64(data) == _b64_as_first_written(data)


def _b64_as_first_written(blob: bytes) -> bytes | None:
    import base64
    import binascii

    try:
        return base64.b64decode(blob + b"=" * (-len(blob) % 4))
    except (binascii.Error, ValueError):
        return None
