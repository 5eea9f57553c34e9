"""One duration grammar, two strictnesses: whole-second lifetimes and fractional-second timers."""

from __future__ import annotations

from typing import Any

import pytest

from jitgate.durations import parse_duration, parse_seconds
from jitgate.policy import parse_duration as policy_parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(900, 900), ("900", 900), ("30s", 30), ("15m", 900), ("1h", 3600), ("2d", 172800), (" 5 m ", 300)],
)
def test_durations(value: int | str, seconds: int) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", [0, -1, "0m", "15 minutes", "1w", "m", "", "1.5h", True, "15M", "1500ms", "-5s"])
def test_bad_durations(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_the_policy_reads_durations_with_the_same_parser() -> None:
    assert policy_parse_duration is parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        # what the gateway's options accept today: plain seconds, fractions, exponents (float()),
        ("120", 120.0), ("0.5", 0.5), (" 10 ", 10.0), ("1e3", 1000.0),
        # units: milliseconds and seconds (upstream timeout), minutes and more (approval timeouts)
        ("1500ms", 1.5), ("60s", 60.0), ("2.5s", 2.5), ("60S", 60.0), ("2m", 120.0), ("1h", 3600.0),
        ("1d", 86400.0), ("0.5m", 30.0), ("15 m", 900.0), ("1500 ms", 1.5),
    ],
)
def test_seconds(value: str, seconds: float) -> None:
    assert parse_seconds(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", ["", " ", "abc", "ms", "s", "-1", "-0.5s", "0", "0ms", "inf", "nan", "infs", "nand", "1.5.2s", "1w",
              "true", "5 minutes", "1ms5"],
)
def test_bad_seconds(value: str) -> None:
    with pytest.raises(ValueError):
        parse_seconds(value)


def test_zero_only_when_allowed_and_the_upper_bound() -> None:
    assert parse_seconds("0", zero_ok=True) == 0.0
    assert parse_seconds("0s", zero_ok=True) == 0.0
    with pytest.raises(ValueError, match="non-negative"):
        parse_seconds("-1", zero_ok=True)
    assert parse_seconds("3600s", at_most=3600) == 3600.0
    with pytest.raises(ValueError, match="at most 3600"):
        parse_seconds("61m", at_most=3600)


def test_the_error_quotes_the_value_and_names_the_forms() -> None:
    with pytest.raises(ValueError, match=r"'soon'.*1500ms"):
        parse_seconds("soon")


def test_parse_seconds_takes_only_the_units_a_caller_names() -> None:
    """The upstream timeout takes ms and s: `1h` is refused although it is no more than its ceiling."""
    assert parse_seconds("1500ms", units=("ms", "s")) == 1.5
    with pytest.raises(ValueError, match=r"\(1500ms, 60s\)"):
        parse_seconds("1h", units=("ms", "s"), at_most=3600)
