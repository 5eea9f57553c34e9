"""Recall on the generated corpus of every format x context, PII form and benign case (issue 23)."""

from __future__ import annotations

import json

import pytest

from jitgate.inspect import Scanner
from jitgate.inspect.rules import SECRET_RULES
from tests.inspect import formats
from tests.inspect.formats import PII, Case, missed

SECRET_CASES = formats.secret_cases() + formats.extra_cases()
PII_CASES = formats.pii_cases()
BENIGN = formats.benign_cases()
def _id(c: Case) -> str:
    return f"{c.format}-{c.context}"


def _params(cases: list[Case]) -> list[object]:
    return [pytest.param(c, id=_id(c)) for c in cases]


@pytest.mark.parametrize("case", _params(SECRET_CASES))
def test_every_secret_format_in_every_context(scanner: Scanner, case: Case) -> None:
    assert missed(scanner, case) is None


@pytest.mark.parametrize("case", _params(PII_CASES))
def test_every_pii_form(scanner: Scanner, case: Case) -> None:
    assert missed(scanner, case) is None


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(t, id=f"benign{i}") for i, t in enumerate(BENIGN)
    ],
)
def test_benign_values_give_no_finding(scanner: Scanner, text: str) -> None:
    found = scanner.scan(text.encode(), pii=PII, json_strings=text.startswith("{")).findings
    assert [f.type for f in found] == []


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
