"""jitgate.durations: one reading of a duration for every option and policy field."""

from __future__ import annotations

import pytest

from jitgate.durations import seconds


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (900, 900.0), (2.5, 2.5), ("900", 900.0), ("2.5", 2.5), (".5", 0.5), ("30s", 30.0), ("1500ms", 1.5),
        ("15m", 900.0), ("1h", 3600.0), ("1d", 86400.0), (" 2 m ", 120.0), ("10S", 10.0),
    ],
)
def test_a_duration_is_read_in_seconds(value: int | float | str, expected: float) -> None:
    assert seconds(value) == expected


@pytest.mark.parametrize(
    "value", [True, "", "m", "5y", "-1", -1, float("nan"), float("inf"), "inf", "nan", "1.5.2", 0, "5 m s"]
)
def test_what_is_no_duration_is_refused(value: object) -> None:
    with pytest.raises(ValueError):
        seconds(value)  # type: ignore[arg-type]


def test_a_caller_narrows_what_it_takes() -> None:
    assert seconds("0", zero_ok=True) == 0.0
    with pytest.raises(ValueError, match="jitgate_x must be positive"):
        seconds("0", what="jitgate_x")
    with pytest.raises(ValueError, match=r"\(ms, s\)"):
        seconds("1h", units=("ms", "s"))
    with pytest.raises(ValueError, match="whole"):
        seconds("1.5h", whole=True)
    with pytest.raises(ValueError, match="whole"):
        seconds("1e3", whole=True)
    assert seconds("15m", whole=True) == 900.0
    with pytest.raises(ValueError, match="at most 3600"):
        seconds("3601", maximum=3600)
