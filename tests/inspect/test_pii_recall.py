"""PII formats beyond the US-only first cut (issue 23): every IBAN country, every card network's
ranges and groupings, SSNs in three forms, IPv4/IPv6 in every textual form, and what only looks like
them (versions, netmasks, reverse-DNS names). Values are generated here; each is masked whole."""

from __future__ import annotations

import random
import string

import phonenumbers
import pytest

from jitgate.inspect import PII_TYPES, Scanner
from jitgate.inspect.validators import DEFAULT_PHONE_REGIONS
from tests.inspect import corpus
from tests.inspect.conftest import KEY
from tests.inspect.corpus import card_number as _card
from tests.inspect.corpus import grouped as _grouped
from tests.inspect.corpus import iban_of as _iban
from tests.inspect.corpus import phone_of as _phone

_RNG = random.Random(23)


def _masked_whole(scanner: Scanner, value: str, typ: str) -> None:
    raw = f"Customer record: {value}, noted.".encode()
    result = scanner.scan(raw, pii=PII_TYPES)
    assert [f.type for f in result.findings] == [typ], value
    assert result.masked(raw).startswith(f"Customer record: [REDACTED:{typ}:".encode())
    assert result.masked(raw).endswith(b"], noted.")


_COUNTRIES = corpus.IBAN_LENGTHS


@pytest.mark.parametrize("country", sorted(_COUNTRIES))
@pytest.mark.parametrize("spaced", [False, True])
def test_iban_of_every_registered_country_masked_whole(scanner: Scanner, country: str, spaced: bool) -> None:
    iban = _iban(country, _COUNTRIES[country], _RNG)
    _masked_whole(scanner, " ".join(iban[i : i + 4] for i in range(0, len(iban), 4)) if spaced else iban, "iban")


def test_an_iban_with_a_wrong_check_is_no_finding(scanner: Scanner) -> None:
    iban = _iban("UA", 29, _RNG)
    bad = iban[:2] + f"{(int(iban[2:4]) + 1) % 100:02d}" + iban[4:]
    assert scanner.scan(f"ref {bad} end".encode(), pii=PII_TYPES).findings == []


_CARDS = corpus.CARD_KINDS


@pytest.mark.parametrize(("network", "prefix", "length", "groups"), _CARDS)
@pytest.mark.parametrize("sep", ["", " ", "-"])
def test_cards_of_every_major_network_and_grouping(
    scanner: Scanner, network: str, prefix: str, length: int, groups: tuple[int, ...], sep: str
) -> None:
    _masked_whole(scanner, _grouped(_card(prefix, length, _RNG), groups, sep), "card")


def test_a_card_number_failing_luhn_or_outside_every_range_is_no_finding(scanner: Scanner) -> None:
    good = _card("36", 14, _RNG)
    bad_luhn = good[:-1] + str((int(good[-1]) + 1) % 10)
    no_issuer = _card("1", 16, _RNG)
    for value in (bad_luhn, no_issuer):
        assert scanner.scan(f"order {_grouped(value, (4, 6, 4, 2), ' ')} ok".encode(), pii={"card"}).findings == []


def _ssn(rng: random.Random) -> tuple[str, str, str]:
    return f"{rng.randint(1, 665):03d}", f"{rng.randint(1, 99):02d}", f"{rng.randint(1, 9999):04d}"


@pytest.mark.parametrize("sep", ["-", " "])
def test_ssn_dashed_and_spaced(scanner: Scanner, sep: str) -> None:
    _masked_whole(scanner, sep.join(_ssn(_RNG)), "ssn")


@pytest.mark.parametrize("context", ["SSN: {}", "ssn={}", "Social Security Number {}", "SS# {}"])
def test_undashed_ssn_with_context(scanner: Scanner, context: str) -> None:
    value = "".join(_ssn(_RNG))
    raw = context.format(value).encode()
    result = scanner.scan(raw, pii=PII_TYPES)
    assert [f.type for f in result.findings] == ["ssn"]
    assert value.encode() not in result.masked(raw)


def test_undashed_nine_digits_without_context_are_no_ssn(scanner: Scanner) -> None:
    raw = f"order {''.join(_ssn(_RNG))} shipped".encode()
    assert scanner.scan(raw, pii={"ssn"}).findings == []


@pytest.mark.parametrize(
    "value",
    ["fd35::21cc", "2001:db8::8a2e:370:7334", "::ffff:198.51.100.23", "fe80::1ff:fe23:4567:890a",
     "2001:0db8:0000:0000:0000:ff00:0042:8329", "64:ff9b::192.0.2.33", "203.0.113.77"],
)
def test_ip_addresses_in_every_textual_form_masked_whole(scanner: Scanner, value: str) -> None:
    _masked_whole(scanner, value, "ip")


@pytest.mark.parametrize(
    "text",
    ["Upgraded the agent to 1.2.3.4 today", "download setup-1.2.3.4.exe now", "netmask 255.255.255.0 set",
     "mask 255.255.240.0", "PTR 4.3.2.1.in-addr.arpa", "running version 10.2.3.4", "tag v1.2.3.4 built",
     "build 2.14.7.1 passed"],
)
def test_versions_netmasks_and_reverse_dns_are_no_ip(scanner: Scanner, text: str) -> None:
    assert scanner.scan(text.encode(), pii=PII_TYPES).findings == []


@pytest.mark.parametrize("region", corpus.PHONE_REGIONS)
@pytest.mark.parametrize("form", sorted(corpus.PHONE_FORMATS))
def test_phones_of_the_major_regions_in_every_form(scanner: Scanner, region: str, form: str) -> None:
    number = _phone(region, _RNG)
    text = phonenumbers.format_number(number, corpus.PHONE_FORMATS[form])
    if "(" in text:  # a parenthesised area code: the rule's own grouping, not the one under test here
        text = text.replace("(", "").replace(")", "")
    _masked_whole(scanner, text, "phone")


def test_phone_regions_are_configurable() -> None:
    number = _phone("JP", _RNG)
    raw = f"call {phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)} now".encode()
    for engine in ("hyperscan", "re"):
        assert [f.type for f in Scanner(KEY, engine=engine).scan(raw, pii={"phone"}).findings] == ["phone"]
        assert Scanner(KEY, engine=engine, phone_regions=["US"]).scan(raw, pii={"phone"}).findings == []
    with pytest.raises(ValueError, match="unknown phone regions: XX"):
        Scanner(KEY, engine="re", phone_regions=["US", "XX"])


def test_order_numbers_are_masked_only_where_a_numbering_plan_says_valid(scanner: Scanner) -> None:
    rng = random.Random(7)
    kept = 0
    for _ in range(40):
        digits = "".join(rng.choices(string.digits, k=10))
        text = f"{digits[:4]} {digits[4:7]} {digits[7:]}"
        valid = any(phonenumbers.is_valid_number(phonenumbers.parse(text, r)) for r in DEFAULT_PHONE_REGIONS)
        found = scanner.scan(f"order {text} shipped".encode(), pii={"phone"}).findings
        assert bool(found) == valid, text
        kept += not valid
    assert kept  # some of them are no valid number anywhere, and stay


def test_every_generated_pii_format_is_found_whole_as_its_type(scanner: Scanner) -> None:
    """The benchmark's corpus (one value of every format): each found over its full span, as its type."""
    for typ, form, value in corpus.pii_cases(random.Random(5)):
        raw = f"Record: {value}, noted.".encode()
        planted = value.removeprefix("SSN: ").encode()
        start = raw.index(planted)
        found = [(f.type, f.start, f.end) for f in scanner.scan(raw, pii=PII_TYPES).findings]
        assert found == [(typ, start, start + len(planted))], form
