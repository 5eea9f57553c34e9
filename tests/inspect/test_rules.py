"""Each rule finds its format over the full span, in every context, and leaves look-alikes alone."""

from __future__ import annotations

import base64
import json
import random
import uuid

import pytest

from jitgate.inspect import PII_TYPES, SECRET_TYPES, Scanner
from jitgate.inspect import validators as v
from tests.inspect import corpus


def test_at_least_sixty_secret_formats() -> None:
    assert len(SECRET_TYPES) >= 60
    assert {"email", "phone", "card", "iban", "ssn", "ip"} <= PII_TYPES


@pytest.mark.parametrize("typ", sorted(corpus.PREFIXED))
@pytest.mark.parametrize("context", ["prose", "env", "json_in_json", "yaml", "code", "url", "log", "line"])
def test_prefixed_format_found_over_full_span(scanner: Scanner, typ: str, context: str) -> None:
    rng = random.Random(f"{typ}/{context}")
    value = corpus.PREFIXED[typ](rng)
    text = corpus._CONTEXTS[context](rng, "credential_value", value)
    raw = json.dumps({"documents": [text]}).encode()
    spans = corpus.occurrences(raw, value)
    assert spans
    result = scanner.scan(raw, json_strings=True)
    for a, b in spans:
        hits = [f for f in result.findings if f.start <= a and b <= f.end]
        assert hits, f"{typ} in {context} not found"
        assert hits[0].type == typ
    masked = result.masked(raw)
    assert value.encode() not in masked
    assert json.loads(masked)["documents"][0].count("[REDACTED:") >= 1


@pytest.mark.parametrize("prefix", [*corpus.AWS_KEY_ID_PREFIXES[:4], "A3T0", "A3TA"])
@pytest.mark.parametrize("digit", "0189")
def test_aws_key_id_with_a_digit_outside_base32_is_found_and_masked(scanner: Scanner, prefix: str, digit: str) -> None:
    """Issue 16 item 13: 16 characters of [A-Z0-9] (the policy's "sixteen alphanumeric characters"),
    not only base32 [A-Z2-7]: a 0, 1, 8 or 9 anywhere in them must not let the key through."""
    rng = random.Random(prefix + digit)
    for spot in (0, 7, 15):
        body = [*(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))]
        body[spot] = digit
        value = prefix + "".join(body)
        for raw in (f"aws key {value} in prose".encode(), json.dumps({"documents": [f"id={value}"]}).encode()):
            result = scanner.scan(raw, json_strings=True)
            assert [(f.type, raw[f.start : f.end]) for f in result.findings] == [("aws_access_key_id", value.encode())]
            assert value.encode() not in result.masked(raw)


@pytest.mark.parametrize(
    "text",
    [
        "AKIA" + "0123456789ABCDE",  # 15 characters
        "AKIA" + "0123456789ABCDEF" + "9",  # 17: part of a longer run
        "XAKIA" + "0123456789ABCDEF",  # inside a longer run on the left
        "akia" + "0123456789abcdef",  # key ids are upper case
        "A3T" + "0123456789ABCDEF",  # A3T needs one more character before the 16
    ],
)
def test_aws_key_id_look_alikes_are_not_findings(scanner: Scanner, text: str) -> None:
    assert scanner.scan(text.encode(), json_strings=True).findings == []


@pytest.mark.parametrize("typ", sorted(corpus.CONTEXTUAL))
def test_contextual_secret_masks_only_the_value(scanner: Scanner, typ: str) -> None:
    rng = random.Random(typ)
    keys, make = corpus.CONTEXTUAL[typ]
    value = make(rng)
    raw = f"{keys[0]}={value}\n".encode()
    result = scanner.scan(raw)
    assert [(f.type, raw[f.start : f.end]) for f in result.findings] == [(typ, value.encode())]
    assert result.masked(raw).startswith(f"{keys[0]}=[REDACTED:{typ}:".encode())


def test_database_url_masks_the_password_only(scanner: Scanner) -> None:
    pw = corpus._password(random.Random(1))
    raw = f"postgres://app:{pw}@db.internal:5432/app".encode()
    masked = scanner.scan(raw).masked(raw).decode()
    assert masked.startswith("postgres://app:[REDACTED:database_password:")
    assert masked.endswith("@db.internal:5432/app")


def test_pem_block_masked_from_begin_to_end(scanner: Scanner) -> None:
    pem = corpus._pem(random.Random(2))
    for raw in (f"key:\n{pem}\nend".encode(), json.dumps({"k": pem}).encode()):
        result = scanner.scan(raw, json_strings=True)
        assert [f.type for f in result.findings] == ["private_key"]
        masked = result.masked(raw)
        assert b"PRIVATE KEY" not in masked and b"BEGIN" not in masked


@pytest.mark.parametrize("typ", sorted(corpus.PII))
def test_pii_found_when_asked(scanner: Scanner, typ: str) -> None:
    rng = random.Random(typ)
    for _ in range(20):
        value = corpus.PII[typ](rng)
        raw = f"Customer wrote from {value} about the renewal.".encode()
        found = scanner.scan(raw, pii={typ}).findings
        assert [(f.type, raw[f.start : f.end]) for f in found] == [(typ, value.encode())]
        assert scanner.scan(raw).findings == []  # not asked for: not scanned


@pytest.mark.parametrize(
    "text",
    [
        "AKIA" + "IOSFODNN7" + "EXAMPLE",
        "password: changeme",
        "api_key: ${API_KEY}",
        "token = <your-token-here>",
        "OPENAI_API_KEY=your_api_key_here",
        "password = get_password()",
        "api_key=settings.API_KEY",
        "secret: str",
        "the JIT token: credential_inject strips it",
        'client(api_key="should-not-leak")',
        "url = f'postgres://app:{pw}@db.internal/app'",
        "DATABASE_URL=postgres://app:$DB_PASSWORD@db/app",
        "max_tokens=4096",
        "version 10.4.2.1 released",
        "v1.2.3.4",
        "card 4111 1111 1111 1112",  # Luhn fails
        "ssn 000-12-3456 and 666-12-3456 and 912-12-3456",
        "iban DE00 1234 5678 9012 3456 78",  # mod 97 fails
        "call 12 345 678",
        "id 123e4567-e89b-12d3-a456-426614174000",
        "ghp_" + "a" * 36,  # GitHub checksum fails
    ],
)
def test_negatives_are_not_findings(scanner: Scanner, text: str) -> None:
    assert scanner.scan(text.encode(), pii=PII_TYPES).findings == []


def test_negative_corpus_is_untouched(scanner: Scanner) -> None:
    rng = random.Random(5)
    for _ in range(300):
        neg = corpus._negative(rng).encode()
        result = scanner.scan(neg, pii=PII_TYPES, json_strings=True)
        assert result.findings == [], neg
        assert result.masked(neg) == neg


def test_github_checksum_validator() -> None:
    good = corpus.PREFIXED["github_pat"](random.Random(3)).encode()
    assert v.github_checksum(good)
    assert not v.github_checksum(good[:-1] + (b"A" if good[-1:] != b"A" else b"B"))


@pytest.mark.parametrize(
    ("validator", "good", "bad"),
    [
        (v.luhn, b"4111 1111 1111 1111", b"4111 1111 1111 1121"),
        (v.iban, b"GB82 WEST 1234 5698 7654 32", b"GB82 WEST 1234 5698 7654 33"),
        (v.ssn, b"123-45-6789", b"900-45-6789"),
        (v.jwt, b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig", b"eyJub3RqcyI.eyJ4.sig"),
        (v.ipv4, b"203.0.113.9", b"127.0.0.1"),
    ],
)
def test_validators(validator: v.Validator, good: bytes, bad: bytes) -> None:
    assert validator(good)
    assert not validator(bad)


def test_every_trigger_is_a_prefix_of_its_pattern() -> None:
    """Both engines confirm only where a trigger matched: that is exact only for prefixes."""
    from jitgate.inspect.rules import DECODER_RULES, RULES

    for rule in RULES + DECODER_RULES:
        if rule.trigger:
            assert rule.pattern.startswith(rule.trigger) or rule.name == "json_escape", rule.name


_BENIGN_TOKEN_KEYS = (
    "next_page_token", "nextPageToken", "page_token", "pageToken", "next-token", "NextToken",
    "continuation_token", "continuationToken", "idempotency_token", "IdempotencyToken", "cursor_token",
    "pagination_token", "resume_token", "sync_token",
)
_CREDENTIAL_TOKEN_KEYS = (
    "token", "api_token", "session_token", "github_token", "auth_token", "access_token", "x-token",
)


def _token_value(rng: random.Random, kind: int) -> str:
    raw = bytes(rng.randrange(256) for _ in range(24))
    return [base64.urlsafe_b64encode(raw).decode().rstrip("="), str(uuid.UUID(bytes=raw[:16])), raw.hex()][kind % 3]


def _contexts(key: str, value: str) -> list[bytes]:
    return [
        json.dumps({key: value, "documents": ["a"]}).encode(),
        f"{key}={value}\n".encode(),
        f"{key}: {value}\n".encode(),
        f"GET /v1/items?{key}={value}".encode(),
    ]


@pytest.mark.parametrize("key", _BENIGN_TOKEN_KEYS)
def test_pagination_and_idempotency_tokens_are_no_secret(scanner: Scanner, key: str) -> None:
    """Issue 23: `"next_page_token": "<base64url>"` was a generic_secret every time, so the default
    profile (request secrets blocked) refused an ordinary paginated request."""
    rng = random.Random(key)
    for kind in range(6):
        for body in _contexts(key, _token_value(rng, kind)):
            assert scanner.scan(body, json_strings=True).findings == [], body


@pytest.mark.parametrize("key", _CREDENTIAL_TOKEN_KEYS)
def test_credential_tokens_are_still_found(scanner: Scanner, key: str) -> None:
    rng = random.Random(key)
    for kind in (0, 2):
        for body in _contexts(key, _token_value(rng, kind)):
            types = [f.type for f in scanner.scan(body, json_strings=True).findings]
            assert "generic_secret" in types, body
