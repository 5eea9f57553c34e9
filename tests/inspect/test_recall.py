"""Recall on the generated corpus of every format x context, PII form and benign case (issue 23)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from jitgate.inspect import Scanner
from jitgate.inspect.rules import SECRET_RULES
from tests.inspect import formats
from tests.inspect.formats import Case

PII = ("email", "phone", "card", "iban", "ssn", "ip")
_U = re.compile(r"\\u([0-9a-fA-F]{4})")
_MARKER = re.compile(r"\[REDACTED:[^\]]*\]")


def _views(text: str) -> list[str]:
    """The text as a reader decodes it: raw, %-decoded, JSON escapes decoded."""
    return [text, unquote(text), _U.sub(lambda m: chr(int(m.group(1), 16)), text).replace("\\/", "/")]


def missed(scanner: Scanner, case: Case) -> str | None:
    """Why the case is not masked whole (None: masked whole, by a finding of the right kind)."""
    raw = case.text.encode()
    result = scanner.scan(raw, pii=PII if case.kind == "pii" else (), json_strings=True)
    needle = case.needle.encode()
    pos = raw.find(needle)
    while pos != -1:
        end = pos + len(needle)
        if not any(
            f.start <= pos and end <= f.end and f.kind == case.kind and (case.type is None or f.type == case.type)
            for f in result.findings
        ):
            return "no finding covers it: " + ",".join(f.type for f in result.findings)
        pos = raw.find(needle, end)
    masked = _MARKER.sub("", result.masked(raw).decode())  # a marker names the type (`rubygems_…`)
    w = min(8, len(case.value))
    pieces = {case.value[i : i + w] for i in range(0, len(case.value) - w + 1)}
    pieces |= {case.needle[i : i + w] for i in range(0, len(case.needle) - w + 1)}
    rest = _views(case.text.replace(case.needle, ""))  # pieces the text holds anyway (`https://`)
    pieces = {p for p in pieces if not any(p in r for r in rest)}
    for view in _views(masked):
        if any(p in view for p in pieces):
            return "part of it is left visible"
    return None


SECRET_CASES = formats.secret_cases() + formats.extra_cases()
PII_CASES = formats.pii_cases()
BENIGN = formats.benign_cases()
# The cases the engine missed before issue 23's rules, as ids: each is expected to fail until fixed
# (strict: a case that passes must be taken off the list).
_KNOWN = Path(__file__).with_name("recall_known_misses.txt")
KNOWN_MISSES = frozenset(_KNOWN.read_text().split()) if _KNOWN.exists() else frozenset()


def _id(c: Case) -> str:
    return f"{c.format}-{c.context}"


def _params(cases: list[Case]) -> list[object]:
    return [
        pytest.param(c, id=_id(c), marks=[pytest.mark.xfail(strict=True)] if _id(c) in KNOWN_MISSES else [])
        for c in cases
    ]


@pytest.mark.parametrize("case", _params(SECRET_CASES))
def test_every_secret_format_in_every_context(scanner: Scanner, case: Case) -> None:
    assert missed(scanner, case) is None


@pytest.mark.parametrize("case", _params(PII_CASES))
def test_every_pii_form(scanner: Scanner, case: Case) -> None:
    assert missed(scanner, case) is None


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(t, id=f"benign{i}", marks=[pytest.mark.xfail(strict=True)] if f"benign{i}" in KNOWN_MISSES else [])
        for i, t in enumerate(BENIGN)
    ],
)
def test_benign_values_give_no_finding(scanner: Scanner, text: str) -> None:
    found = scanner.scan(text.encode(), pii=PII, json_strings=text.startswith("{")).findings
    assert [f.type for f in found] == []


@pytest.mark.xfail("rules_walked" in KNOWN_MISSES, strict=True, reason="rules without a case before issue 23")
def test_every_secret_rule_is_walked(hs_scanner: Scanner) -> None:
    """Every secret rule finds at least one case of the corpus (a rule without cases is untested)."""
    seen: set[str] = set()
    for case in SECRET_CASES:
        raw = case.text.encode()
        seen |= {f.type for f in hs_scanner.scan(raw, json_strings=True).findings}
    untested = {r.name for r in SECRET_RULES} - seen
    assert not untested, sorted(untested)


def test_cases_are_json_where_they_say() -> None:
    for case in SECRET_CASES:
        if case.context in ("json", "json_u", "json_slash"):
            json.loads(case.text)
