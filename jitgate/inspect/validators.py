"""Checks that turn a pattern match into a finding: checksums, entropy, placeholders, ranges.

Each validator takes the matched value (bytes, the span that would be masked) and returns
whether it is a real finding. They are pure and cheap; the engine calls them only on the few
candidates its patterns confirm.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import re
import zlib
from collections import Counter
from collections.abc import Callable

import phonenumbers

Validator = Callable[[bytes], bool]

_B62 = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Marks of documentation values: a value carrying one of these is an example, not a secret.
_PLACEHOLDERS = (
    b"EXAMPLE",
    b"example",
    b"Example",
    b"XXXXXXXX",
    b"xxxxxxxx",
    b"your_",
    b"YOUR_",
    b"your-",
    b"YOUR-",
    b"${",
    b"{{",
    b"REDACTED",
    b"PLACEHOLDER",
    b"placeholder",
    b"changeme",
    b"CHANGEME",
    b"dummy",
    b"DUMMY",
    b"*****",
    b"...",
    b"0000000000000000",
)
_DOTTED_IDENT = re.compile(rb"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+(?:\(\))?")
_UPPER_IDENT = re.compile(rb"[A-Z][A-Z0-9_]*")
_CLASSES = (re.compile(rb"[a-z]"), re.compile(rb"[A-Z]"), re.compile(rb"[0-9]"), re.compile(rb"[^A-Za-z0-9]"))
_IBAN_LENGTHS = {
    b"AD": 24,
    b"AT": 20,
    b"BE": 16,
    b"BG": 22,
    b"CH": 21,
    b"CY": 28,
    b"CZ": 24,
    b"DE": 22,
    b"DK": 18,
    b"EE": 20,
    b"ES": 24,
    b"FI": 18,
    b"FR": 27,
    b"GB": 22,
    b"GR": 27,
    b"HR": 21,
    b"HU": 28,
    b"IE": 22,
    b"IS": 26,
    b"IT": 27,
    b"LI": 21,
    b"LT": 20,
    b"LU": 20,
    b"LV": 21,
    b"MC": 27,
    b"MT": 31,
    b"NL": 18,
    b"NO": 15,
    b"PL": 28,
    b"PT": 25,
    b"RO": 24,
    b"SE": 24,
    b"SI": 19,
    b"SK": 24,
    b"SM": 27,
    b"TR": 26,
    b"AE": 23,
    b"SA": 24,
    b"IL": 23,
    b"BR": 29,
    b"QA": 29,
    b"KW": 30,
}


_CLOG = [0.0] + [c * math.log2(c) for c in range(1, 4097)]


def entropy(value: bytes) -> float:
    """Shannon entropy in bits per byte: log2(n) - sum(c * log2(c)) / n over byte counts c."""
    n = len(value)
    if not n:
        return 0.0
    if n >= len(_CLOG):
        return -sum(c / n * math.log2(c / n) for c in Counter(value).values())
    return math.log2(n) - sum([_CLOG[value.count(b)] for b in set(value)]) / n


# Slack for float rounding: `entropy` sums up to 128 terms of a few bits each, each off by ULPs.
_EPSILON = 1e-9


def entropy_at_least(value: bytes, bits: float) -> bool:
    """`entropy(value) >= bits`, mostly without counting each byte.

    With n bytes of k distinct values, the entropy is at most log2(k) (all equally often) and
    at least what one value n-k+1 times and the others once give; only a value between the
    two bounds (by more than float rounding) is counted.
    """
    n = len(value)
    k = len(set(value))
    if k > 1 and n < len(_CLOG):
        if math.log2(n) - _CLOG[n - k + 1] / n >= bits + _EPSILON:
            return True
        if math.log2(k) < bits - _EPSILON:
            return False
    return entropy(value) >= bits


def _alternation(literals: tuple[bytes, ...]) -> re.Pattern[bytes]:
    """A regex for "any of `literals`", grouped by first byte (`E(?:XAMPLE|xample)|<|...`): the
    same matches as the flat alternation, found faster by `re`."""
    rests: dict[bytes, list[bytes]] = {}
    for lit in literals:
        rests.setdefault(lit[:1], []).append(lit[1:])
    return re.compile(
        b"|".join(
            re.escape(first) + (b"(?:" + b"|".join(re.escape(r) for r in rest) + b")" if any(rest) else b"")
            for first, rest in rests.items()
        )
    )


_PLACEHOLDER_RE = _alternation(_PLACEHOLDERS)
# Template variables stand in for a value: `{pw}`, `$PASSWORD`, `%(password)s`, `%s`.
_TEMPLATE = re.compile(rb"\{[A-Za-z_][\w.]*\}|\$[A-Za-z_]\w*|%(?:\(\w+\))?s")
# `<your-token-here>`, `<API KEY>`: a name in angle brackets (a `<` inside a password is no mark).
_ANGLED = re.compile(rb"<[A-Za-z][\w .-]*>")
# Words joined by `_` or `-` (`credential_inject`, `client-own`): names, not secrets.
_WORDS = re.compile(rb"[A-Za-z]+(?:[_-][A-Za-z]+)*")


def not_placeholder(value: bytes) -> bool:
    if _PLACEHOLDER_RE.search(value) is not None or _TEMPLATE.fullmatch(value) is not None:
        return False
    if b"<" in value and _ANGLED.search(value) is not None:
        return False
    return len(set(value[:8])) > 3 or len(set(value)) > 3  # a short head usually settles it


def github_checksum(value: bytes) -> bool:
    """GitHub's prefixed tokens end in the base62 CRC32 of the 30 random characters before it."""
    body = value.split(b"_", 1)[1]
    random_part, check = body[:-6], body[-6:]
    crc = zlib.crc32(random_part)
    out = bytearray()
    for _ in range(6):
        crc, r = divmod(crc, 62)
        out.append(_B62[r])
    return bytes(reversed(out)) == check


_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


# Names and numbers, not keys: `client.secret_key()`, `API_TOKEN`, `credential_inject`, `11547274426668.0`
# (`"credential": 11547274426668.0` is a number). One alternation: one `fullmatch` call for all four.
# A call (`get_password()`, `os.environ.get("PW")`): code, not a value.
_CALL = re.compile(rb"[A-Za-z_][\w.]*\(.*\)?")  # its `)` may be left out as closing punctuation
_NOT_A_VALUE = re.compile(
    b"|".join(b"(?:" + p.pattern + b")" for p in (_DOTTED_IDENT, _UPPER_IDENT, _WORDS, _NUMBER, _CALL))
)
_ALNUM = bytes(range(48, 58)) + bytes(range(65, 91)) + bytes(range(97, 123))


def generic_secret(value: bytes) -> bool:
    """A keyword-gated value: long and random enough, not code, not a placeholder."""
    if len(value) < 8 or not entropy_at_least(value, min(3.0, 0.8 * math.log2(len(value)))):
        return False
    if _NOT_A_VALUE.fullmatch(value):
        return False
    return _two_classes(value)


def _two_classes(value: bytes) -> bool:
    """Bytes of at least two of: lower-case letters, upper-case letters, digits, the rest."""
    if value.isalpha():  # letters only: both cases?
        return not (value.islower() or value.isupper())
    if value.isdigit():
        return False
    return len(value.translate(None, _ALNUM)) != len(value)  # not all of "the rest"


def high_entropy(value: bytes) -> bool:
    return entropy_at_least(value, 3.0)


def jwt(value: bytes) -> bool:
    """The header must decode to a JSON object naming an algorithm."""
    head = value.split(b".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(head + b"=" * (-len(head) % 4)))
    except (ValueError, binascii.Error):
        return False
    return isinstance(decoded, dict) and "alg" in decoded


def luhn(value: bytes) -> bool:
    digits = [c - 48 for c in value if 48 <= c <= 57]
    if not 13 <= len(digits) <= 19:
        return False
    seps = {c for c in value if not 48 <= c <= 57}
    if len(seps) > 1:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    if total % 10:
        return False
    s = "".join(map(str, digits))
    return (
        s[0] == "4"
        or 51 <= int(s[:2]) <= 55
        or 2221 <= int(s[:4]) <= 2720
        or s[:2] in ("34", "37")
        or s.startswith(("6011", "65", "35"))
    )


def iban(value: bytes) -> bool:
    compact = value.replace(b" ", b"").upper()
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    moved = (compact[4:] + compact[:4]).decode("ascii")
    numeric = "".join(str(int(ch, 36)) for ch in moved)
    return int(numeric) % 97 == 1


def ssn(value: bytes) -> bool:
    area, group, serial = value[:3], value[4:6], value[7:]
    if area in (b"000", b"666") or area[:1] == b"9":
        return False
    return group != b"00" and serial != b"0000"


def ipv4(value: bytes) -> bool:
    try:
        addr = ipaddress.IPv4Address(value.decode("ascii"))
    except ValueError:
        return False
    return not (addr.is_unspecified or addr.is_loopback)


def ipv6(value: bytes) -> bool:
    text = value.decode("ascii")
    if text.count(":") < 3:
        return False
    try:
        addr = ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return not (addr.is_unspecified or addr.is_loopback)


def phone(value: bytes) -> bool:
    text = value.decode("ascii")
    digits = sum(ch.isdigit() for ch in text)
    if not 8 <= digits <= 15:
        return False
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else "US")
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number)


def email(value: bytes) -> bool:
    domain = value.rsplit(b"@", 1)[1]
    return not domain.startswith(b".") and b".." not in value and not domain.endswith((b".png", b".jpg", b".svg"))


def all_of(*checks: Validator) -> Validator:
    def _check(value: bytes) -> bool:
        return all(c(value) for c in checks)

    return _check
