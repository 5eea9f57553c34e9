"""Durations, parsed in one place: the policy, the broker's settings, the CLI and the gateway's options.

Two strictnesses of one grammar (a number, then optionally `ms`, `s`, `m`, `h` or `d`):
`parse_duration` gives whole seconds for lifetimes (token TTLs, approval windows), where a
fraction or a millisecond is a mistake; `parse_seconds` gives fractional seconds for timers
(refresh intervals, timeouts), from the strings mitmproxy's `--set` hands over (it cannot parse a
float option). Both raise ValueError with a sentence that quotes the value, never a secret; the
caller names the setting and raises its own error (PolicyError, BrokerMisconfigured, BadRequest,
an options error).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection

_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
UNITS = tuple(_SCALE)
_EXAMPLE = {"ms": "1500ms", "s": "60s", "m": "2m", "h": "1h", "d": "1d"}
_WHOLE = re.compile(r"\s*(\d+)\s*([smhd]?)\s*")
_UNIT = re.compile(r"(ms|[smhd])\s*$")


def parse_duration(value: int | str) -> int:
    """Positive whole seconds from `900`, `"900"`, `"30s"`, `"15m"`, `"1h"` or `"1d"` (case-sensitive)."""
    if isinstance(value, bool):  # JSON true is no duration, though Python calls it 1
        raise ValueError("a duration is a number of seconds or a string like '15m'")
    if isinstance(value, int):
        seconds = value
    else:
        m = _WHOLE.fullmatch(str(value))
        if not m:
            raise ValueError(f"invalid duration {value!r}: use seconds or a string like '15m'")
        seconds = int(m.group(1)) * int(_SCALE[m.group(2) or "s"])
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


def parse_seconds(
    value: str, *, zero_ok: bool = False, at_most: float | None = None, units: Collection[str] = UNITS
) -> float:
    """Finite seconds from `"2.5"`, `"1500ms"`, `"60s"`, `"2m"`, `"1h"` or `"1d"` (any case).

    Positive, or zero as well with `zero_ok`; not above `at_most` when given; a unit only of `units`
    (the upstream timeout takes `ms` and `s`).
    """
    text = value.strip().lower()
    unit = _UNIT.search(text)
    number, scale = (text[: unit.start()], _SCALE[unit.group(1)]) if unit else (text, 1.0)
    shown = ", ".join(_EXAMPLE[u] for u in units)
    if unit is not None and unit.group(1) not in units:
        raise ValueError(f"invalid duration {value!r}: use a number of seconds (2.5) or a unit ({shown})")
    try:
        seconds = float(number.strip()) * scale
    except ValueError:
        raise ValueError(f"invalid duration {value!r}: use a number of seconds (2.5) or a unit ({shown})") from None
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero_ok):
        raise ValueError(f"a duration must be {'non-negative' if zero_ok else 'positive'} and finite")
    if at_most is not None and seconds > at_most:
        raise ValueError(f"a duration must be at most {at_most:g} s")
    return seconds
