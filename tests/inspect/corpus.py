"""A seeded generator of labelled rerank bodies: planted secrets and PII in many contexts, plus negatives.

Every secret is generated at run time from a seed; nothing here is a real credential, and no
complete credential appears in this file (prefixes and bodies are joined at run time).
The labels say what was planted where, so tests and benchmarks can measure recall over the
full span and count false positives.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import string
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import phonenumbers

ALNUM = string.ascii_letters + string.digits
UPPER_NUM = string.ascii_uppercase + string.digits
LOWER_NUM = string.ascii_lowercase + string.digits
HEX = "0123456789abcdef"
B32 = string.ascii_uppercase + "234567"
URLSAFE = ALNUM + "_-"
B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


@dataclass(frozen=True)
class Planted:
    """One labelled value: `value` is exactly the span that must be masked."""

    type: str
    kind: str  # secret | pii
    value: str
    context: str


@dataclass
class Body:
    """A rerank request body and what was planted in it."""

    payload: dict[str, Any]
    planted: list[Planted] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)

    def encode(self) -> bytes:
        return json.dumps(self.payload).encode()


def _r(rng: random.Random, chars: str, n: int) -> str:
    return "".join(rng.choices(chars, k=n))


def _github(prefix: str) -> Callable[[random.Random], str]:
    def make(rng: random.Random) -> str:
        body = _r(rng, ALNUM, 30)
        crc = zlib.crc32(body.encode())
        check = ""
        for _ in range(6):
            crc, rem = divmod(crc, 62)
            check = B62[rem] + check
        return prefix + body + check

    return make


def _simple(prefix: str, chars: str, n: int, suffix: str = "") -> Callable[[random.Random], str]:
    return lambda rng: prefix + _r(rng, chars, n) + suffix


def _jwt(rng: random.Random) -> str:
    def seg(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    head = seg({"alg": "HS256", "typ": "JWT"})
    payload = seg({"sub": _r(rng, LOWER_NUM, 12), "iat": rng.randint(1_600_000_000, 1_800_000_000)})
    return f"{head}.{payload}.{_r(rng, URLSAFE, 43)}"


def _pem(rng: random.Random) -> str:
    kind = rng.choice(["", "RSA ", "EC ", "OPENSSH "])
    dashes = "-" * 5
    lines = [base64.b64encode(rng.randbytes(48)).decode() for _ in range(rng.randint(4, 12))]
    return (
        f"{dashes}BEGIN {kind}PRIVATE KEY{dashes}\n" + "\n".join(lines) + f"\n{dashes}END {kind}PRIVATE KEY{dashes}"
    )


def _azure_conn(rng: random.Random) -> str:
    return _r(rng, string.ascii_letters + string.digits + "+/", 86) + "=="


def _password(rng: random.Random) -> str:
    """12-20 distinct characters of three classes or more. With repeats a draw could fall under the
    generic rule's entropy bar (3 bits: `igqoTFF55005` is 2.86), which no detector claims to find."""
    head = rng.sample(string.ascii_lowercase, 4) + rng.sample(string.ascii_uppercase, 3) + rng.sample(string.digits, 3)
    rest = sorted(set(ALNUM + "!#%*") - set(head))
    return "".join(head + rng.sample(rest, rng.randint(2, 10)))


AWS_KEY_ID_PREFIXES = ("AKIA", "ASIA", "ABIA", "ACCA", "A3T")


def _aws_key_id(rng: random.Random) -> str:
    """A key id as detect-secrets and trufflehog match it: a prefix (A3T and one more), then 16 of
    [A-Z0-9], so 0, 1, 8 and 9 are planted too, not only the base32 AWS issues."""
    prefix = rng.choice(AWS_KEY_ID_PREFIXES)
    return prefix + ("" if len(prefix) == 4 else rng.choice(UPPER_NUM)) + _r(rng, UPPER_NUM, 16)


# type -> generator of the value to mask (provider formats, all prefixed).
PREFIXED: dict[str, Callable[[random.Random], str]] = {
    "aws_access_key_id": _aws_key_id,
    "google_api_key": _simple("AIza", URLSAFE, 35),
    "google_oauth_client_secret": _simple("GOCSPX-", URLSAFE, 28),
    "digitalocean_pat": _simple("dop_v1_", HEX, 64),
    "alibaba_access_key_id": _simple("LTAI", ALNUM, 20),
    "databricks_token": _simple("dapi", HEX, 32),
    "github_pat": _github("ghp_"),
    "github_oauth_token": _github("gho_"),
    "github_user_to_server_token": _github("ghu_"),
    "github_server_to_server_token": _github("ghs_"),
    "github_refresh_token": _github("ghr_"),
    "github_fine_grained_pat": lambda rng: "github_pat_" + _r(rng, ALNUM, 22) + "_" + _r(rng, ALNUM, 59),
    "gitlab_pat": _simple("glpat-", URLSAFE, 20),
    "gitlab_deploy_token": _simple("gldt-", URLSAFE, 20),
    "gitlab_runner_token": _simple("glrt-", URLSAFE, 20),
    "gitlab_pipeline_trigger_token": _simple("glptt-", HEX, 40),
    "npm_token": _simple("npm_", ALNUM, 36),
    "pypi_token": _simple("pypi-AgEIcHlwaS5vcmc", URLSAFE, 70),
    "rubygems_api_key": _simple("rubygems_", HEX, 48),
    "dockerhub_pat": _simple("dckr_pat_", URLSAFE, 27),
    "hashicorp_vault_token": _simple("hvs.", URLSAFE, 90),
    "slack_bot_token": lambda rng: (
        f"xoxb-{_r(rng, string.digits, 12)}-{_r(rng, string.digits, 13)}-{_r(rng, ALNUM, 24)}"
    ),
    "slack_user_token": lambda rng: (
        f"xoxp-{_r(rng, string.digits, 12)}-{_r(rng, string.digits, 12)}-"
        f"{_r(rng, string.digits, 13)}-{_r(rng, HEX, 32)}"
    ),
    "slack_app_token": lambda rng: f"xapp-1-{_r(rng, UPPER_NUM, 11)}-{_r(rng, string.digits, 13)}-{_r(rng, HEX, 64)}",
    "slack_webhook": lambda rng: (
        f"https://hooks.slack.com/services/T{_r(rng, UPPER_NUM, 10)}/B{_r(rng, UPPER_NUM, 10)}/{_r(rng, ALNUM, 24)}"
    ),
    "discord_webhook": lambda rng: (
        f"https://discord.com/api/webhooks/{_r(rng, string.digits, 18)}/{_r(rng, URLSAFE, 68)}"
    ),
    "telegram_bot_token": lambda rng: f"{_r(rng, string.digits, 10)}:AA{_r(rng, URLSAFE, 33)}",
    "twilio_api_key": _simple("SK", HEX, 32),
    "sendgrid_api_key": lambda rng: f"SG.{_r(rng, URLSAFE, 22)}.{_r(rng, URLSAFE, 43)}",
    "mailgun_api_key": _simple("key-", HEX, 32),
    "stripe_secret_key": _simple("sk_" + "live_", ALNUM, 24),
    "stripe_restricted_key": _simple("rk_" + "live_", ALNUM, 99),
    "stripe_webhook_secret": _simple("whsec_", ALNUM, 32),
    "shopify_access_token": _simple("shpat_", HEX, 32),
    "openai_project_key": lambda rng: "sk-proj-" + _r(rng, URLSAFE, 74) + "T3BlbkFJ" + _r(rng, URLSAFE, 74),
    "openai_service_account_key": _simple("sk-svcacct-", URLSAFE, 150),
    "openai_legacy_key": lambda rng: "sk-" + _r(rng, ALNUM, 20) + "T3BlbkFJ" + _r(rng, ALNUM, 20),
    "anthropic_api_key": _simple("sk-ant-api03-", URLSAFE, 93, "AA"),
    "huggingface_token": _simple("hf_", string.ascii_letters, 34),
    "groq_api_key": _simple("gsk_", ALNUM, 52),
    "replicate_api_token": _simple("r8_", ALNUM, 37),
    "perplexity_api_key": _simple("pplx-", ALNUM, 48),
    "xai_api_key": _simple("xai-", ALNUM, 80),
    "voyage_api_key": _simple("pa-", URLSAFE, 43),
    "jina_api_key": _simple("jina_", URLSAFE, 60),
    "langsmith_api_key": lambda rng: f"lsv2_pt_{_r(rng, HEX, 32)}_{_r(rng, HEX, 10)}",
    "pinecone_api_key": _simple("pcsk_", ALNUM, 60),
    "newrelic_user_key": _simple("NRAK-", UPPER_NUM, 27),
    "grafana_service_account_token": lambda rng: f"glsa_{_r(rng, ALNUM, 32)}_{_r(rng, HEX, 8)}",
    "linear_api_key": _simple("lin_api_", ALNUM, 40),
    "figma_token": _simple("figd_", URLSAFE, 40),
    "supabase_token": _simple("sbp_", HEX, 40),
    "postman_api_key": lambda rng: f"PMAK-{_r(rng, HEX, 24)}-{_r(rng, HEX, 34)}",
    "age_secret_key": _simple("AGE-SECRET-KEY-1", "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 58),
    "square_access_token": _simple("EAAA", URLSAFE, 60),
    "jwt": _jwt,
}

# type -> (key name, value generator): secrets recognised only by their context.
CONTEXTUAL: dict[str, tuple[list[str], Callable[[random.Random], str]]] = {
    "aws_secret_access_key": (
        ["aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"],
        lambda rng: _r(rng, ALNUM + "+/", 40),
    ),
    "twilio_auth_token": (["TWILIO_AUTH_TOKEN"], _simple("", HEX, 32)),
    "cohere_api_key": (["CO_API_KEY", "COHERE_API_KEY"], _simple("", ALNUM, 40)),
    "generic_secret": (["password", "DB_PASSWORD", "client_secret", "api_key"], _password),
}

PII: dict[str, Callable[[random.Random], str]] = {}


def _email(rng: random.Random) -> str:
    name = f"{rng.choice(['ana', 'bo', 'chen', 'dara'])}.{_r(rng, string.ascii_lowercase, 6)}"
    return f"{name}@{_r(rng, string.ascii_lowercase, 7)}.{rng.choice(['com', 'org', 'de', 'co.uk'])}"


def _phone(rng: random.Random) -> str:
    while True:
        choice = rng.randrange(3)
        if choice == 0:
            area, ex, sub = rng.choice(["212", "415", "617", "312", "206"]), rng.randint(201, 989), rng.randint(0, 9999)
            text = rng.choice([f"({area}) {ex}-{sub:04d}", f"+1 {area}-{ex}-{sub:04d}", f"{area}.{ex}.{sub:04d}"])
        elif choice == 1:
            text = f"+44 20 7{rng.randint(100, 999)} {rng.randint(1000, 9999)}"
        else:
            text = f"+49 30 {rng.randint(1000000, 9999999)}"
        number = phonenumbers.parse(text, None if text.startswith("+") else "US")
        if phonenumbers.is_valid_number(number):
            return text


def _luhn_digit(digits: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def _card(rng: random.Random) -> str:
    prefix = rng.choice(["4", "51", "55", "37"])
    length = 15 if prefix == "37" else 16
    body = prefix + _r(rng, string.digits, length - len(prefix) - 1)
    number = body + _luhn_digit(body)
    sep = rng.choice(["", " ", "-"])
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4))


def _iban(rng: random.Random) -> str:
    country, bban = rng.choice([("DE", _r(rng, string.digits, 18)), ("GB", "NWBK" + _r(rng, string.digits, 14))])
    numeric = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    check = 98 - int(numeric) % 97
    compact = f"{country}{check:02d}{bban}"
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4)) if rng.random() < 0.5 else compact


def _ssn(rng: random.Random) -> str:
    area = rng.choice([rng.randint(1, 665), rng.randint(667, 899)])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def _ip(rng: random.Random) -> str:
    if rng.random() < 0.8:
        first = rng.choice([rng.randint(11, 126), rng.randint(128, 223)])
        return f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    return f"2001:db8:{rng.randint(1, 0xFFFF):x}:{rng.randint(1, 0xFFFF):x}::{rng.randint(1, 0xFFFF):x}"


PII.update(email=_email, phone=_phone, card=_card, iban=_iban, ssn=_ssn, ip=_ip)

_WORD_TEXT = (
    "the search ranking model returns relevant passages for each query while the retrieval stage keeps "
    "candidate documents in a vector store and the reranker scores them against user intent quarterly "
    "report revenue pipeline deploy service cluster region latency budget customer support ticket "
    "migration schedule incident review owner team release notes contract renewal warehouse shipment"
)
_WORDS = _WORD_TEXT.split()


def _prose(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(_WORDS, k=n)) + "."


# Contexts a secret appears in; `{v}` is the value, `{k}` a key name fitting the value.
_CONTEXTS: dict[str, Callable[[random.Random, str, str], str]] = {
    "prose": lambda rng, k, v: f"{_prose(rng, 12)} The key {v} was pasted here by mistake. {_prose(rng, 8)}",
    "env": lambda rng, k, v: f"# settings\nREGION=eu-west-1\n{k}={v}\nDEBUG=false\n",
    "json_in_json": lambda rng, k, v: json.dumps({"service": "billing", "config": {k: v, "retries": 3}}),
    "yaml": lambda rng, k, v: f"service:\n  name: billing\n  {k}: {v}\n  timeout: 30\n",
    "code": lambda rng, k, v: f'import client\n\n{k.lower()} = "{v}"\nresp = client.get(url, timeout=5)\n',
    "url": lambda rng, k, v: f"curl 'https://api.internal.example/v1/items?{k}={v}&page=2'",
    "line": lambda rng, k, v: f"keys rotated today:\n{v}\n- done",
    "log": lambda rng, k, v: f"2025-03-14T09:26:53Z INFO worker-7 auth ok {k}={v} latency_ms=42",
}
_NAMED = {  # key names that suit prefixed values, so contexts look realistic
    "default": ["API_KEY", "token", "auth", "credential_value"],
}


def _negative(rng: random.Random) -> str:
    kind = rng.randrange(9)
    if kind == 0:
        return f"request id {uuid.UUID(int=rng.getrandbits(128), version=4)} completed"
    if kind == 1:
        return f"fixed in commit {_r(rng, HEX, 40)} (see {_r(rng, HEX, 7)})"
    if kind == 2:
        return f"sha256:{hashlib.sha256(rng.randbytes(16)).hexdigest()}"
    if kind == 3:
        blob = base64.b64encode(b"\x89PNG\r\n\x1a\n" + rng.randbytes(rng.randint(300, 3000))).decode()
        return f"![chart](data:image/png;base64,{blob})"
    if kind == 4:
        return f"publishable key pk_test_{_r(rng, ALNUM, 24)} is safe to embed"
    if kind == 5:
        return rng.choice(
            [f"upgraded to v{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}",
             f"version {rng.randint(1, 20)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 99)}",
             f"Python 3.12.{rng.randint(0, 9)} and numpy 1.{rng.randint(20, 26)}.{rng.randint(0, 5)}"]
        )
    if kind == 6:
        return rng.choice(
            ["AKIA" + "IOSFODNN7" + "EXAMPLE", "password: changeme", "api_key: ${API_KEY}",
             "token = <your-token-here>", "sk_" + "live_" + "x" * 24, "OPENAI_API_KEY=your_api_key_here"]
        )
    if kind == 7:
        day = f"2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}"
        return f"order {rng.randint(10000, 99999)} shipped on {day} for ${rng.randint(1, 999)}.{rng.randint(10, 99)}"
    return f"password = get_password()  # secret: str, token_count={rng.randint(1, 99999)}"


def plant_secret(rng: random.Random) -> tuple[str, Planted]:
    """A text fragment with one planted secret, and its label."""
    if rng.random() < 0.08:
        value = _pem(rng)
        if rng.random() < 0.5:
            return value, Planted("private_key", "secret", value, "pem")
        return json.dumps({"type": "service_account", "private_key": value}), Planted(
            "private_key", "secret", value, "json_in_json"
        )
    if rng.random() < 0.07:
        pw = _password(rng)
        scheme = rng.choice(["postgres", "mysql", "mongodb+srv", "redis"])
        return f"DATABASE_URL={scheme}://app_user:{pw}@db-1.internal.example:5432/app", Planted(
            "database_password", "secret", pw, "url"
        )
    if rng.random() < 0.03:
        value = _azure_conn(rng)
        account = f"acme{_r(rng, LOWER_NUM, 6)}"
        text = f"DefaultEndpointsProtocol=https;AccountName={account};AccountKey={value};EndpointSuffix=example.net"
        return text, Planted("azure_storage_connection_string", "secret", value, "env")
    if rng.random() < 0.15:
        typ = rng.choice(sorted(CONTEXTUAL))
        keys, make = CONTEXTUAL[typ]
        value = make(rng)
        ctx = rng.choice(["env", "yaml", "json_in_json", "code", "log"])
        return _CONTEXTS[ctx](rng, rng.choice(keys), value), Planted(typ, "secret", value, ctx)
    typ = rng.choice(sorted(PREFIXED))
    value = PREFIXED[typ](rng)
    ctx = rng.choice(sorted(_CONTEXTS))
    return _CONTEXTS[ctx](rng, rng.choice(_NAMED["default"]), value), Planted(typ, "secret", value, ctx)


def plant_pii(rng: random.Random) -> tuple[str, Planted]:
    typ = rng.choice(sorted(PII))
    value = PII[typ](rng)
    text = rng.choice(
        [
            f"Customer wrote from {value} about the renewal.",
            f"contact: {value}\n",
            f"{_prose(rng, 6)} ({value}) {_prose(rng, 4)}",
        ]
    )
    return text, Planted(typ, "pii", value, "prose")


def rerank_body(
    seed: int,
    *,
    documents: int = 20,
    secret_rate: float = 0.3,
    pii_rate: float = 0.3,
    negative_rate: float = 0.5,
    doc_words: int = 40,
    objects: bool | None = None,
    target_bytes: int | None = None,
) -> Body:
    """A Cohere-shaped rerank body; documents as strings or `{"text": ...}` objects."""
    rng = random.Random(seed)
    as_objects = rng.random() < 0.5 if objects is None else objects
    body = Body({"model": "rerank-v3.5", "query": _prose(rng, 8), "documents": [], "top_n": 3})
    docs: list[Any] = body.payload["documents"]
    size = 0
    i = 0
    while (target_bytes is not None and size < target_bytes) or (target_bytes is None and i < documents):
        parts = [_prose(rng, doc_words)]
        if rng.random() < secret_rate:
            text, label = plant_secret(rng)
            parts.append(text)
            body.planted.append(label)
        if rng.random() < pii_rate:
            text, label = plant_pii(rng)
            parts.append(text)
            body.planted.append(label)
        if rng.random() < negative_rate:
            neg = _negative(rng)
            parts.append(neg)
            body.negatives.append(neg)
        text = "\n".join(parts)
        docs.append({"text": text, "id": f"doc-{i}"} if as_objects else text)
        size += len(text) + 8
        i += 1
    return body


def occurrences(raw: bytes, value: str) -> list[tuple[int, int]]:
    """Spans of `value` in a JSON text, in its JSON-escaped forms (plain, escaped, double-escaped)."""
    forms = {value.encode(), json.dumps(value)[1:-1].encode(), json.dumps(json.dumps(value)[1:-1])[1:-1].encode()}
    spans: list[tuple[int, int]] = []
    for form in forms:
        pos = raw.find(form)
        while pos != -1:
            spans.append((pos, pos + len(form)))
            pos = raw.find(form, pos + 1)
    return spans


# -- PII in every format the engine knows (issue 23): the benchmark's per-type recall and the tests --


def iban_of(country: str, length: int, rng: random.Random) -> str:
    bban = "".join(rng.choices(string.digits, k=length - 4))
    numeric = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    return f"{country}{98 - int(numeric) % 97:02d}{bban}"


def grouped(value: str, sizes: tuple[int, ...], sep: str) -> str:
    parts, i = [], 0
    for n in sizes:
        parts.append(value[i : i + n])
        i += n
    return sep.join(p for p in parts if p)


def card_number(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choices(string.digits, k=length - len(prefix) - 1))
    return body + _luhn_digit(body)


def phone_of(region: str, rng: random.Random) -> phonenumbers.PhoneNumber:
    """A valid number of `region`: its example number with random last digits."""
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    assert example is not None
    while True:
        national = str(example.national_number)
        candidate = phonenumbers.parse(f"+{example.country_code}{national[:-4]}{rng.randint(0, 9999):04d}")
        if phonenumbers.is_valid_number(candidate):
            return candidate


PHONE_FORMATS = {
    "e164": phonenumbers.PhoneNumberFormat.E164,
    "international": phonenumbers.PhoneNumberFormat.INTERNATIONAL,
    "national": phonenumbers.PhoneNumberFormat.NATIONAL,
}


IBAN_LENGTHS = {"UA": 29, "PK": 24, "GE": 22, "RS": 22, "EG": 29, "AZ": 28, "LC": 32, "RU": 33, "NO": 15, "MT": 31,
                "JO": 30, "KZ": 20, "XK": 20, "BY": 28, "SC": 31, "DE": 22, "GB": 22, "FR": 27, "BR": 29, "SA": 24}
CARD_KINDS = [  # network, prefix, length, grouping
    ("amex", "37", 15, (4, 6, 5)), ("amex", "34", 15, (4, 4, 4, 3)), ("diners", "36", 14, (4, 6, 4)),
    ("diners", "300", 14, (4, 6, 4)), ("unionpay", "62", 16, (4, 4, 4, 4)), ("unionpay", "62", 19, (4, 4, 4, 4, 3)),
    ("discover", "6011", 16, (4, 4, 4, 4)), ("jcb", "3530", 16, (4, 4, 4, 4)), ("mastercard", "2221", 16, (4, 4, 4, 4)),
    ("maestro", "6759", 19, (4, 4, 4, 4, 3)), ("mir", "2200", 16, (4, 4, 4, 4)), ("visa", "4", 16, (4, 4, 4, 4)),
]
PHONE_REGIONS = ["US", "GB", "DE", "JP", "FR", "IN", "ES", "NL"]


def pii_cases(rng: random.Random) -> list[tuple[str, str, str]]:
    """(type, format, value): one generated value of every PII format, each in a sentence of its own."""
    cases: list[tuple[str, str, str]] = [("email", "email", _email(rng))]
    for region in PHONE_REGIONS:
        for form, fmt in PHONE_FORMATS.items():
            text = phonenumbers.format_number(phone_of(region, rng), fmt).replace("(", "").replace(")", "")
            cases.append(("phone", f"{region}-{form}", text))
    for country, length in IBAN_LENGTHS.items():
        value = iban_of(country, length, rng)
        cases.append(("iban", country, value))
        cases.append(("iban", f"{country}-spaced", " ".join(value[i : i + 4] for i in range(0, len(value), 4))))
    for network, prefix, length, groups in CARD_KINDS:
        for sep in ("", " ", "-"):
            value = grouped(card_number(prefix, length, rng), groups, sep)
            cases.append(("card", f"{network}-{length}-{sep or 'none'}", value))
    area, group, serial = f"{rng.randint(1, 665):03d}", f"{rng.randint(1, 99):02d}", f"{rng.randint(1, 9999):04d}"
    cases += [("ssn", "dashed", f"{area}-{group}-{serial}"), ("ssn", "spaced", f"{area} {group} {serial}"),
              ("ssn", "undashed", f"SSN: {area}{group}{serial}")]
    h = [f"{rng.randint(1, 0xFFFF):x}" for _ in range(8)]
    cases += [("ip", "v4", f"{rng.randint(11, 126)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"),
              ("ip", "v6-full", ":".join(h)), ("ip", "v6-compressed", f"fd{h[0][:2]:0>2}::{h[1]}"),
              ("ip", "v6-mapped", f"::ffff:198.51.{rng.randint(0, 255)}.{rng.randint(1, 254)}"),
              ("ip", "v6-middle", f"2001:db8::{h[2]}:{h[3]}")]
    return cases
