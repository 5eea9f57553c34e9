"""One reading of a duration, for every option and policy field that takes one.

A duration is a number of seconds (`900`, `2.5`) or a string with a unit: `1500ms`, `30s`, `15m`,
`1h`, `1d` (`"2.5"` and `"2.5s"` too). Option strings come from mitmproxy's `--set`, which cannot
parse floats; policy fields from YAML. Booleans, NaN, infinities and negative values are no
durations. A caller narrows what it takes: the units (the upstream timeout: `ms` and `s`), whole
numbers only (policy TTLs), a ceiling.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)\s*", re.IGNORECASE)
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def seconds(
    value: int | float | str,
    *,
    what: str = "a duration",
    zero_ok: bool = False,
    units: Collection[str] = tuple(UNITS),
    whole: bool = False,
    maximum: float | None = None,
) -> float:
    """`value` in seconds; ValueError naming `what` otherwise.

    `units`: the units a string may carry (a bare number is seconds); `whole`: the number written
    must be an integer; `maximum`: the longest duration taken.
    """
    if isinstance(value, bool):
        raise ValueError(f"{what} is a number of seconds or a string like '15m', not a boolean")
    if isinstance(value, int | float):
        number, unit = float(value), ""
        written_whole = isinstance(value, int) or value.is_integer()
    else:
        m = _DURATION.fullmatch(str(value))
        unit = m.group(2).lower() if m else ""
        if m is not None and (not unit or unit in units):
            number, written_whole = float(m.group(1)), "." not in m.group(1)
        else:
            try:  # `nan`, `inf`, `-1`, `1e3`: numbers, judged below
                number, unit, written_whole = float(str(value)), "", False
            except ValueError:
                shown = ", ".join(units) or "none"
                raise ValueError(
                    f"{what} must be a number of seconds or a number with a unit ({shown}), not {value!r}"
                ) from None
    result = number * UNITS.get(unit, 1.0)
    if not math.isfinite(result) or result < 0 or (result == 0 and not zero_ok):
        raise ValueError(f"{what} must be {'non-negative' if zero_ok else 'positive'} and finite")
    if whole and not written_whole:
        raise ValueError(f"{what} must be a whole number")
    if maximum is not None and result > maximum:
        raise ValueError(f"{what} must be at most {maximum:g} s")
    return result
