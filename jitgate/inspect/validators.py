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
    b"EXAMPLE", b"example", b"Example", b"XXXXXXXX", b"xxxxxxxx", b"your_", b"YOUR_", b"your-", b"YOUR-",
    b"<", b"${", b"{{", b"REDACTED", b"PLACEHOLDER", b"placeholder", b"changeme", b"CHANGEME", b"dummy",
    b"DUMMY", b"*****", b"...", b"0000000000000000",
)
_DOTTED_IDENT = re.compile(rb"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+(?:\(\))?")
_UPPER_IDENT = re.compile(rb"[A-Z][A-Z0-9_]*")
_CLASSES = (re.compile(rb"[a-z]"), re.compile(rb"[A-Z]"), re.compile(rb"[0-9]"), re.compile(rb"[^A-Za-z0-9]"))
# The IBAN registry's length for every country (French overseas departments and territories use
# France's format): a country missing here left its IBANs visible or half-masked as phone or card.
_IBAN_REGISTRY = (
    "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BL27 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 DJ27 DK18 "
    "DO28 EE20 EG29 ES24 FI18 FK18 FO18 FR27 GB22 GE22 GF27 GI23 GL18 GP27 GR27 GT28 HN28 HR21 HU28 IE22 "
    "IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 LY25 MC27 MD24 ME22 MF27 MK19 MN20 "
    "MQ27 MR27 MT31 MU30 NC27 NI28 NL18 NO15 OM23 PF27 PK24 PL28 PM27 PS29 PT25 QA29 RE27 RO24 RS22 RU33 "
    "SA24 SC31 SD18 SE24 SI19 SK24 SM27 SO23 ST25 SV28 TF27 TL23 TN24 TR26 UA29 VA22 VG24 WF27 XK20 YE30 "
    "YT27"
)
_IBAN_LENGTHS = {item[:2].encode(): int(item[2:]) for item in _IBAN_REGISTRY.split()}


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
# Words joined by `_` or `-` (`credential_inject`, `client-own`): names, not secrets.
_WORDS = re.compile(rb"[A-Za-z]+(?:[_-][A-Za-z]+)*")


def not_placeholder(value: bytes) -> bool:
    if _PLACEHOLDER_RE.search(value) is not None or _TEMPLATE.fullmatch(value) is not None:
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
_NOT_A_VALUE = re.compile(b"|".join(b"(?:" + p.pattern + b")" for p in (_DOTTED_IDENT, _UPPER_IDENT, _WORDS, _NUMBER)))
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
    return any(low <= int(s[: len(str(low))]) <= high and len(s) in lengths for low, high, lengths in _ISSUERS)


# Issuer ranges (IIN prefixes, inclusive) and card lengths of the major networks.
_ISSUERS: tuple[tuple[int, int, frozenset[int]], ...] = tuple(
    (low, high, frozenset(lengths))
    for low, high, lengths in (
        (4, 4, (13, 16, 19)),  # Visa
        (51, 55, (16,)), (2221, 2720, (16,)),  # Mastercard
        (34, 34, (15,)), (37, 37, (15,)),  # American Express
        (300, 305, (14, 15, 16, 17, 18, 19)), (3095, 3095, (14, 15, 16, 17, 18, 19)),  # Diners Club
        (36, 36, (14, 15, 16, 17, 18, 19)), (38, 39, (14, 15, 16, 17, 18, 19)),
        (6011, 6011, (16, 17, 18, 19)), (644, 649, (16, 17, 18, 19)), (65, 65, (16, 17, 18, 19)),  # Discover
        (3528, 3589, (16, 17, 18, 19)),  # JCB
        (62, 62, (16, 17, 18, 19)), (81, 81, (16, 17, 18, 19)),  # UnionPay
        (2200, 2204, (16, 17, 18, 19)),  # Mir
        (50, 50, (12, 13, 14, 15, 16, 17, 18, 19)), (56, 69, (12, 13, 14, 15, 16, 17, 18, 19)),  # Maestro
        (60, 60, (16,)), (82, 82, (16,)), (508, 508, (16,)), (353, 353, (16,)), (356, 356, (16,)),  # RuPay
        (506, 506, (16, 18, 19)), (9792, 9792, (16,)),  # Verve, Troy
    )
)


def iban(value: bytes) -> bool:
    compact = value.replace(b" ", b"").upper()
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    moved = (compact[4:] + compact[:4]).decode("ascii")
    numeric = "".join(str(int(ch, 36)) for ch in moved)
    return int(numeric) % 97 == 1


def ssn(value: bytes) -> bool:
    """A US SSN, dashed, spaced or undashed: not an area, group or serial the SSA never issues."""
    digits = value.replace(b"-", b"").replace(b" ", b"")
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in (b"000", b"666") or area[:1] == b"9":
        return False
    return group != b"00" and serial != b"0000"


def ipv4(value: bytes) -> bool:
    """A host address: not unspecified, loopback, `0.x.x.x`, or a netmask (`255.255.255.0`)."""
    try:
        addr = ipaddress.IPv4Address(value.decode("ascii"))
    except ValueError:
        return False
    if addr.is_unspecified or addr.is_loopback or value.startswith(b"0."):
        return False
    inverted = ~int(addr) & 0xFFFFFFFF
    return not (value.startswith(b"255.") and inverted & (inverted + 1) == 0)


def ipv6(value: bytes) -> bool:
    """Any textual IPv6 form `ipaddress` reads (full, compressed `fd35::21cc`, `::ffff:a.b.c.d`)."""
    text = value.decode("ascii")
    if "::" not in text and text.count(":") < 6:
        return False
    try:
        addr = ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return not (addr.is_unspecified or addr.is_loopback)


# Where a number written without `+` is read (the major numbering plans, not only the US); the
# gateway option `jitgate_pii_phone_regions` replaces the list.
# Dates, the SSN shape and dotted quads are no phone numbers (`2024-06-12`, `12.06.2024`,
# `000-12-3456`, `115.133.188.220`), whatever a numbering plan allows: a date is no PII, the others
# are the SSN and IP rules' to judge.
_NOT_PHONE = re.compile(
    rb"(?:19|20)[0-9]{2}([-./ ])[0-9]{1,2}\1[0-9]{1,2}|[0-9]{1,2}([-./ ])[0-9]{1,2}\2(?:19|20)[0-9]{2}"
    rb"|[0-9]{3}([- ])[0-9]{2}\3[0-9]{4}|[0-9]{1,3}(?:\.[0-9]{1,3}){3}"
)
DEFAULT_PHONE_REGIONS: tuple[str, ...] = ("US", "GB", "DE", "FR", "JP", "IN", "ES", "NL", "IT", "BR", "AU", "MX", "CN")


def phone_in(regions: tuple[str, ...]) -> Validator:
    """A valid number by `phonenumbers`: E.164 (`+` and country code) as written, else in one of `regions`.

    An order number shaped like a phone number is no finding unless one of those plans says it is
    a valid number.
    """
    unknown = sorted(set(regions) - phonenumbers.SUPPORTED_REGIONS)
    if unknown or not regions:
        raise ValueError(f"unknown phone regions: {', '.join(unknown) or '(none given)'}")

    def _phone(value: bytes) -> bool:
        text = value.decode("ascii")
        if not 8 <= sum(ch.isdigit() for ch in text) <= 15 or _NOT_PHONE.fullmatch(value):
            return False
        for region in (None,) if text.startswith("+") else regions:
            try:
                if phonenumbers.is_valid_number(phonenumbers.parse(text, region)):
                    return True
            except phonenumbers.NumberParseException:
                continue
        return False

    return _phone


phone = phone_in(DEFAULT_PHONE_REGIONS)


def email(value: bytes) -> bool:
    domain = value.rsplit(b"@", 1)[1]
    return not domain.startswith(b".") and b".." not in value and not domain.endswith((b".png", b".jpg", b".svg"))


def all_of(*checks: Validator) -> Validator:
    def _check(value: bytes) -> bool:
        return all(c(value) for c in checks)

    return _check
