"""How the gateway's option values are read and checked: one small parser per kind of option.

Each parser is a `Check`: it takes the raw value mitmproxy holds and the option's name, and gives
the typed value or raises ValueError with the sentence the operator sees (addon/settings.py turns
it into the options error that stops the start). No mitmproxy import: the same checks serve any
front end. A value is quoted in a message only where it is no secret (durations, names, numbers).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from jitgate import durations

Check = Callable[[Any, str], Any]


def as_is(value: Any, name: str) -> Any:
    """The value unchanged (strings whose meaning is checked where they are used, flags)."""
    return value


def seconds(*, zero_ok: bool = False, units: Collection[str] | None = None, at_most: float | None = None) -> Check:
    """Fractional seconds from a duration string (`120`, `0.5`, `2m`: jitgate.durations)."""

    def check(value: Any, name: str) -> float:
        try:
            return durations.parse_seconds(value, zero_ok=zero_ok, units=units or durations.UNITS, at_most=at_most)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None

    return check


def at_least(low: int, unit: str = "") -> Check:
    """An integer no smaller than `low`."""

    def check(value: Any, name: str) -> int:
        if value < low:
            raise ValueError(f"{name} must be at least {low}{unit}")
        return int(value)

    return check


def positive(value: Any, name: str) -> int:
    """An integer above zero."""
    if value <= 0:
        raise ValueError(f"{name} must be positive")
    return int(value)


def between(low: int, high: int) -> Check:
    """An integer from `low` to `high`, both included."""

    def check(value: Any, name: str) -> int:
        if not low <= value <= high:
            raise ValueError(f"{name} must be between {low} and {high}")
        return int(value)

    return check


def one_of(*choices: str) -> Check:
    """One of `choices`."""

    def check(value: Any, name: str) -> str:
        if value not in choices:
            raise ValueError(f"{name} must be {', '.join(choices[:-1])} or {choices[-1]}")
        return str(value)

    return check


def upper_list(value: Any, name: str) -> tuple[str, ...]:
    """A comma-separated list, each item stripped and upper-cased, empty items dropped."""
    return tuple(item.strip().upper() for item in str(value).split(",") if item.strip())


def arn(what: str) -> Check:
    """Empty, or an AWS ARN (`what` names the resource in the message)."""

    def check(value: Any, name: str) -> str:
        if value and not str(value).startswith("arn:"):
            raise ValueError(f"{name} must be an {what} ARN")
        return str(value)

    return check


def plain_name(value: Any, name: str) -> str:
    """Empty, or a name of letters, digits, '-', '_' and '.' (it goes into object keys and ids)."""
    text = str(value)
    if text and not text.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"{name} may hold letters, digits, '-', '_' and '.' only")
    return text


def http_url(what: str) -> Check:
    """An http(s) URL (`what` says whose, in the message)."""

    def check(value: Any, name: str) -> str:
        if not str(value).startswith(("https://", "http://")):
            raise ValueError(f"{name} must be {what} http(s) JWKS URL")
        return str(value)

    return check


def required(value: str, name: str, why: str) -> str:
    """`value`, unless it is empty: then `name` is required, for the reason `why`."""
    if not value:
        raise ValueError(f"{name} is required: {why}")
    return value
