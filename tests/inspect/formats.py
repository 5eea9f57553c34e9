"""A generated corpus of every secret format and PII form the engine must find, in every context,
and of benign values it must leave alone (issue 23).

Values are generated at run time from a seed; no complete credential appears in this file. A case
is (text, needle, kind, type): `needle` is how the value stands in `text` (encoded as the context
encodes it), and masking must cover all of it, of the right kind (and type, for PII).
"""

from __future__ import annotations

import base64
import json
import random
import re
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from urllib.parse import quote, unquote

from jitgate.inspect import Scanner
from tests.inspect import corpus

ALNUM = corpus.ALNUM
HEX = corpus.HEX
URLSAFE = corpus.URLSAFE
_r = corpus._r
Gen = Callable[[random.Random], str]


def _pw_punct(rng: random.Random) -> str:
    """A password holding the punctuation real passwords hold (`$ ; , ( ) [ ] { } | < >`)."""
    base = list(corpus._password(rng))
    for ch in rng.sample("$;,()[]{}|<>", 3):
        base.insert(rng.randrange(1, len(base)), ch)
    return "".join(base)


def _pw_long(rng: random.Random) -> str:
    return _r(rng, ALNUM + "!#%*+/=-_.", rng.randint(129, 3000))


def _pgp(rng: random.Random) -> str:
    d = "-" * 5
    lines = [base64.b64encode(rng.randbytes(48)).decode() for _ in range(6)]
    return (
        f"{d}BEGIN PGP PRIVATE KEY BLOCK{d}\nComment: https://keys.example.org/k/{_r(rng, HEX, 8)}\n\n"
        + "\n".join(lines)
        + f"\n={_r(rng, ALNUM, 4)}\n{d}END PGP PRIVATE KEY BLOCK{d}"
    )


def _ops(rng: random.Random) -> str:
    claims = json.dumps(
        {"signInAddress": "my.example.com", "userAuth": {"method": "SRPg-4096"}, "k": _r(rng, ALNUM, 200)}
    )
    return "ops_" + base64.b64encode(claims.encode()).decode().rstrip("=") + _r(rng, ALNUM, 40)


def _vault_legacy(rng: random.Random) -> str:
    return "s." + "".join(rng.sample(ALNUM, 24))


# Formats found by their shape alone: type -> generator. The corpus' prefixed formats plus the ones
# issue 23 found missing (formats as gitleaks' config and GitHub's secret-scanning patterns give them).
FORMATS: dict[str, Gen] = {
    **corpus.PREFIXED,
    "onepassword_service_account_token": _ops,
    "slack_config_refresh_token": lambda rng: "xoxe-1-" + _r(rng, corpus.UPPER_NUM, 146),
    "hashicorp_vault_batch_token": corpus._simple("hvb.", URLSAFE, 180),
    "gitlab_pat_routable": lambda rng: "glpat-" + _r(rng, URLSAFE, 27) + "." + _r(rng, corpus.LOWER_NUM, 9),
    "grafana_cloud_token": corpus._simple("glc_", ALNUM + "+/", 60),
    "sentry_user_token": corpus._simple("sntryu_", HEX, 64),
    "square_access_token_sq0atp": corpus._simple("sq0atp-", URLSAFE, 22),
    "artifactory_api_key": corpus._simple("AKCp", ALNUM, 69),
    "google_oauth_access_token": corpus._simple("ya29.", URLSAFE, 120),
    "heroku_api_key": corpus._simple("HRKU-", URLSAFE, 60),
    "gitlab_feed_token": corpus._simple("glft-", URLSAFE, 20),
    "atlassian_api_token": corpus._simple("ATATT3", URLSAFE, 186),
    "bitbucket_app_password": corpus._simple("ATBB", ALNUM, 32),
    "doppler_token": corpus._simple("dp.pt.", ALNUM, 43),
    "pulumi_token": corpus._simple("pul-", HEX, 40),
    "openai_admin_key": corpus._simple("sk-admin-", URLSAFE, 60),
    "anthropic_admin_key": corpus._simple("sk-ant-admin01-", URLSAFE, 93, "AA"),
    "sentry_auth_token": corpus._simple("sntrys_", ALNUM, 80),
    "notion_token": corpus._simple("ntn_", ALNUM, 46),
    "flyio_token": corpus._simple("fo1_", URLSAFE, 43),
    "shopify_shared_secret": corpus._simple("shpss_", HEX, 32),
    "square_oauth_secret": corpus._simple("sq0csp-", URLSAFE, 43),
    "adobe_client_secret": lambda rng: "p8e-" + "".join(rng.sample(ALNUM, 32)),
    "artifactory_reference_token": lambda rng: "cmVmd" + "".join(rng.sample(ALNUM, 59)),
    "cloudflare_origin_ca_key": lambda rng: f"v1.0-{_r(rng, HEX, 24)}-{_r(rng, HEX, 146)}",
    "azure_ad_client_secret": lambda rng: f"{_r(rng, ALNUM, 3)}{rng.randint(0, 9)}Q~{_r(rng, ALNUM + '_~.-', 34)}",
    "braintree_access_token": lambda rng: (
        "access_token$" + f"production${_r(rng, corpus.LOWER_NUM, 16)}${_r(rng, HEX, 32)}"
    ),
    "clojars_token": corpus._simple("CLOJARS_", corpus.LOWER_NUM, 60),
    "digitalocean_oauth_token": corpus._simple("doo_v1_", HEX, 64),
    "digitalocean_refresh_token": corpus._simple("dor_v1_", HEX, 64),
    "dynatrace_token": lambda rng: f"dt0c01.{_r(rng, corpus.UPPER_NUM, 24)}.{_r(rng, corpus.UPPER_NUM, 64)}",
    "gitlab_agent_token": corpus._simple("glagent-", URLSAFE, 50),
    "gitlab_cicd_job_token": lambda rng: "glcbt-" + _r(rng, HEX, 2) + "_" + _r(rng, URLSAFE, 20),
    "gitlab_oauth_secret": corpus._simple("gloas-", HEX, 64),
    "gitlab_scim_token": corpus._simple("glsoat-", URLSAFE, 20),
    "huggingface_org_token": corpus._simple("api_org_", string.ascii_letters, 34),
    "mailchimp_api_key": lambda rng: _r(rng, HEX, 32) + f"-us{rng.randint(1, 20)}",
    "nuget_api_key": lambda rng: "oy2" + "".join(rng.sample(corpus.LOWER_NUM, 36)) + _r(rng, corpus.LOWER_NUM, 7),
    "planetscale_token": corpus._simple("pscale_tkn_", URLSAFE, 43),
    "slack_config_token": corpus._simple("xoxe.xoxp-", ALNUM, 120),
    "slack_legacy_token": lambda rng: f"xoxa-{_r(rng, string.digits, 11)}-{_r(rng, ALNUM, 40)}",
    "terraform_cloud_token": lambda rng: f"{_r(rng, ALNUM, 14)}.atlasv1.{_r(rng, URLSAFE, 67)}",
    "private_key": corpus._pem,
    "pgp_private_key": _pgp,
}

# Formats found in an assignment: type -> (key, generator).
ASSIGNED: dict[str, tuple[str, Gen]] = {
    "aws_secret_access_key": ("aws_secret_access_key", lambda rng: _r(rng, ALNUM + "+/", 40)),
    "generic_secret": ("password", corpus._password),
    "generic_secret_punctuation": ("password", _pw_punct),
    "generic_secret_long": ("client_secret", _pw_long),
    "hashicorp_vault_legacy_token": ("VAULT_TOKEN", _vault_legacy),
    "aws_session_token": ("aws_session_token", lambda rng: _r(rng, ALNUM + "+/", 300)),
    "twilio_auth_token": ("TWILIO_AUTH_TOKEN", lambda rng: "".join(rng.sample(HEX, 16)) + _r(rng, HEX, 16)),
    "cohere_api_key": ("CO_API_KEY", lambda rng: "".join(rng.sample(ALNUM, 40))),
    "mistral_api_key": ("MISTRAL_API_KEY", lambda rng: "".join(rng.sample(ALNUM, 32))),
}


@dataclass(frozen=True)
class Case:
    format: str
    context: str
    kind: str
    type: str | None  # the finding type required (PII), None: any secret
    text: str
    needle: str
    value: str


def _json_u(v: str) -> str:
    """The value in a JSON string with its first and a middle character as `\\u` escapes."""
    mid = len(v) // 2
    return "".join(f"\\u{ord(c):04x}" if i in (0, mid) else json.dumps(c)[1:-1] for i, c in enumerate(v))


def _json_slash(v: str) -> str:
    return json.dumps(v)[1:-1].replace("/", "\\/")


# context -> (text with `{n}` for the needle and `{k}` for a key name, how the value becomes the needle)
CONTEXTS: dict[str, tuple[str, Callable[[str], str]]] = {
    "prose": ("The deploy failed, then {n} was pasted in the ticket by mistake. Please rotate it.", str),
    "env": ("# settings\nREGION=eu-west-1\n{k}={n}\nDEBUG=false\n", str),
    "json": ('{{"service": "billing", "{k}": "{n}", "retries": 3}}', lambda v: json.dumps(v)[1:-1]),
    "yaml": ("service:\n  name: billing\n  {k}: {n}\n  timeout: 30\n", str),
    "code": ('import client\n\n{kl} = "{n}"\nresp = client.get(url, timeout=5)\n', lambda v: json.dumps(v)[1:-1]),
    "log": ("2025-03-14T09:26:53Z INFO worker-7 auth ok {k}={n} latency_ms=42", str),
    "url": ("GET https://api.internal.example/v1/items?{k}={n}&page=2", lambda v: quote(v, safe="")),
    "json_u": ('{{"note": "{n}"}}', _json_u),
    # The value once assigned, once in a string whose other slashes are escaped too.
    "json_slash": ('{{"{k}": "{n}", "doc": "see https:\\/\\/docs.example\\/ with {k}={n} set"}}', _json_slash),
    "punctuation": ("Keys: ({n}), then [{n}]; or '{n}'.", str),
}
# Multi-line values (PEM, PGP) in one-line contexts only as JSON escapes them.
_MULTILINE_CONTEXTS = ("prose", "json", "code", "json_u", "json_slash")


def _k8s_secret(v: str) -> str:
    return base64.b64encode(v.encode()).decode()


def secret_cases(seed: int = 23) -> list[Case]:
    rng = random.Random(seed)
    out: list[Case] = []
    for fmt, make in FORMATS.items():
        for ctx, (template, encode) in CONTEXTS.items():
            value = make(rng)
            if "\n" in value and ctx not in _MULTILINE_CONTEXTS:
                continue
            needle = encode(value)
            text = template.format(n=needle, k="token", kl="token")
            out.append(Case(fmt, ctx, "secret", None, text, needle, value))
        value = make(rng)
        if "\n" not in value:  # a Kubernetes Secret holds its values base64-encoded
            needle = _k8s_secret(value)
            text = f"apiVersion: v1\nkind: Secret\ndata:\n  token: {needle}\n  region: ZXUtd2VzdC0x\n"
            out.append(Case(fmt, "k8s_base64", "secret", None, text, needle, value))
    for fmt, (key, make) in ASSIGNED.items():
        for ctx, (template, encode) in CONTEXTS.items():
            if ctx in ("prose", "punctuation", "json_u"):  # no key to assign to
                continue
            value = make(rng)
            needle = encode(value)
            out.append(Case(fmt, ctx, "secret", None, template.format(n=needle, k=key, kl=key.lower()), needle, value))
    return out


def _fstring(rng: random.Random) -> Case:
    token = _r(rng, ALNUM, 40)
    text = "headers = {'Authorization': f'Bearer " + token + "'}\n"
    return Case("authorization_fstring", "code", "secret", None, text, token, token)


def _redis(rng: random.Random) -> Case:
    pw = corpus._password(rng)
    return Case("redis_empty_user", "env", "secret", None, f"REDIS_URL=redis://:{pw}@cache-1:6379/0\n", pw, pw)


def _sas(rng: random.Random) -> Case:
    sig = quote(base64.b64encode(rng.randbytes(32)).decode(), safe="")
    text = f"GET https://acme.blob.example.net/c/b.txt?sv=2024-08-04&ss=b&srt=o&sp=r&sig={sig}&se=2026-01-01"
    return Case("azure_sas_signature", "url", "secret", None, text, sig, sig)


def _url_password(rng: random.Random) -> Case:
    pw = corpus._password(rng)
    return Case("url_password", "log", "secret", None, f"fetching https://deploy:{pw}@git.example.net/r.git", pw, pw)


def _azure_blob_first(rng: random.Random) -> Case:
    key = corpus._azure_conn(rng)
    text = f"BlobEndpoint=https://acme.blob.example.net/;AccountName=acme;AccountKey={key};EndpointSuffix=example.net"
    return Case("azure_storage_account_key", "env", "secret", None, text, key, key)


def extra_cases(seed: int = 24) -> list[Case]:
    rng = random.Random(seed)
    cases = [f(rng) for f in (_fstring, _redis, _azure_blob_first, _sas, _url_password) for _ in range(3)]
    return [replace(c, context=f"{c.context}{i % 3}") for i, c in enumerate(cases)]


def benign_cases(seed: int = 25) -> list[str]:
    """Texts that hold no secret and no PII: every one must give no finding."""
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(4):
        b64u = base64.urlsafe_b64encode(rng.randbytes(48)).decode().rstrip("=")
        u = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        out += [
            json.dumps({"next_page_token": b64u, "items": []}),
            json.dumps({"page_token": b64u}),
            f"nextPageToken: {b64u}",
            json.dumps({"idempotency_token": u}),
            json.dumps({"idempotency_key": u}),
            f"Idempotency-Key: {u}",
            json.dumps({"request_id": _r(rng, HEX, 32)}),
            f"x-request-id: {u}",
            f"traceparent: 00-{_r(rng, HEX, 32)}-{_r(rng, HEX, 16)}-01",
            json.dumps({"trace_id": _r(rng, HEX, 32), "span_id": _r(rng, HEX, 16)}),
            f'ETag: "{_r(rng, HEX, 40)}"',
            json.dumps({"etag": f'W/"{_r(rng, HEX, 16)}"'}),
            f"cursor={b64u}",
            f"continuation_token={b64u}",
            f"session {u} started",
            f"Upgraded the agent to {rng.randint(1, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(1, 99)}",
            f"download setup-{rng.randint(1, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(1, 99)}.exe",
            f"netmask {rng.choice(['255.255.255.0', '255.255.0.0', '255.255.255.128', '255.255.252.0'])}",
            f"Order {rng.randint(2_000_000_000, 9_999_999_999)} shipped",
            f"order number {rng.randint(2_000_000_000, 9_999_999_999)} for ${rng.randint(1, 999)}",
            f"{rng.randint(1, 250)}.{rng.randint(0, 250)}.{rng.randint(0, 250)}.{rng.randint(1, 250)}.in-addr.arpa",
        ]
    return out


# -- PII ---------------------------------------------------------------------------------------


# region -> national and international forms of a valid number (a fixed line or mobile number).
def _phones(rng: random.Random) -> list[tuple[str, str]]:
    import phonenumbers

    out: list[tuple[str, str]] = []
    for region in ("US", "GB", "DE", "FR", "JP", "IN", "ES", "NL", "BR", "AU", "IT", "CA"):
        ex = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        assert ex is not None
        # Another valid number of the same shape: the example's last digits changed.
        for _ in range(50):
            digits = str(ex.national_number)
            cand = digits[:-3] + _r(rng, string.digits, 3)
            num = phonenumbers.parse("+" + str(ex.country_code) + cand)
            if phonenumbers.is_valid_number(num):
                break
        e164 = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
        intl = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        national = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.NATIONAL)
        out += [(region, e164), (region, intl), (region, national)]
    return out


def _luhn_complete(body: str) -> str:
    return body + corpus._luhn_digit(body)


def _cards(rng: random.Random) -> list[str]:
    out = []
    networks = (
        ("4", 16, (4, 4, 4, 4)),
        ("5", 16, (4, 4, 4, 4)),
        ("2221", 16, (4, 4, 4, 4)),
        ("37", 15, (4, 6, 5)),
        ("34", 15, (4, 6, 5)),
        ("36", 14, (4, 6, 4)),
        ("300", 14, (4, 6, 4)),
        ("6011", 16, (4, 4, 4, 4)),
        ("65", 16, (4, 4, 4, 4)),
        ("3528", 16, (4, 4, 4, 4)),
        ("62", 16, (4, 4, 4, 4)),
        ("62", 19, (4, 4, 4, 4, 3)),
        ("4", 19, (4, 4, 4, 4, 3)),
    )
    for prefix, length, groups in networks:
        number = _luhn_complete(prefix + _r(rng, string.digits, length - len(prefix) - 1))
        parts, i = [], 0
        for g in groups:
            parts.append(number[i : i + g])
            i += g
        out += [number, " ".join(parts), "-".join(parts)]
    return out


def _ibans(rng: random.Random) -> list[str]:
    from stdnum import iban as stdiban

    out = []
    for country in ("DE", "GB", "FR", "UA", "PK", "GE", "RS", "EG", "AZ", "BR", "NO", "MT", "SA", "TR"):
        fmt = stdiban._ibandb.info(country + "00")[0][1]
        bban = _bban(rng, fmt.get("bban", ""))
        check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
        compact = f"{country}{check:02d}{bban}"
        out += [compact, " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))]
    return out


def _bban(rng: random.Random, spec: str) -> str:
    """A BBAN of the IBAN registry's structure (`8!n3!a16!c`)."""
    import re

    chars = {"n": string.digits, "a": string.ascii_uppercase, "c": string.ascii_uppercase + string.digits}
    return "".join(_r(rng, chars[t], int(n)) for n, t in re.findall(r"(\d+)!([nac])", spec))


def _ssns(rng: random.Random) -> list[tuple[str, str]]:
    out = []
    for _ in range(3):
        a, g, s = rng.randint(1, 665), rng.randint(1, 99), rng.randint(1, 9999)
        out += [("", f"{a:03d}-{g:02d}-{s:04d}"), ("", f"{a:03d} {g:02d} {s:04d}"), ("SSN ", f"{a:03d}{g:02d}{s:04d}")]
    return out


def _ips(rng: random.Random) -> list[str]:
    a = f"{rng.randint(11, 126)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    h = [f"{rng.randint(1, 0xFFFF):x}" for _ in range(8)]
    return [
        a,
        ":".join(h),
        f"fd35::{h[0]}",
        f"2001:db8:{h[1]}::{h[2]}",
        f"::ffff:{a}",
        ":".join(h).upper(),
        f"fe80::{h[3]}:{h[4]}",
        f"2001:db8::{h[5]}:{h[6]}:{h[7]}",
    ]


PII_TEMPLATES = {
    "prose": "Customer wrote from {n} about the renewal.",
    "json": '{{"contact": "{n}", "note": "call back"}}',
    "line": "contact: {n}\n",
    "punctuation": "({n}), then call.",
}


def pii_cases(seed: int = 26) -> list[Case]:
    rng = random.Random(seed)
    out: list[Case] = []
    values: list[tuple[str, str, str]] = []
    values += [("phone", f"phone:{region}", p) for region, p in _phones(rng)]
    values += [("card", "card", c) for c in _cards(rng)]
    values += [("iban", "iban", i) for i in _ibans(rng)]
    values += [("ssn", "ssn", lead + s) for lead, s in _ssns(rng)]
    values += [("ip", "ip", i) for i in _ips(rng)]
    for n, (typ, fmt, text) in enumerate(values):
        needle = text.removeprefix("SSN ")
        for ctx, t in PII_TEMPLATES.items():
            out.append(Case(f"{fmt}:{n}", ctx, "pii", typ, t.format(n=text), needle, needle))
    return out


# -- judging a case ---------------------------------------------------------------------------------

PII = ("email", "phone", "card", "iban", "ssn", "ip")
_U = re.compile(r"\\u([0-9a-fA-F]{4})")
_MARKER = re.compile(r"\[REDACTED:[^\]]*\]")


def _views(text: str) -> list[str]:
    """The text as a reader decodes it: raw, %-decoded, JSON escapes decoded."""
    return [text, unquote(text), _U.sub(lambda m: chr(int(m.group(1), 16)), text).replace("\\/", "/")]


def missed(scanner: Scanner, case: Case) -> str | None:
    """Why the case is not masked whole (None: masked whole, by a finding of the right kind)."""
    raw = case.text.encode()
    result = scanner.scan(raw, pii=PII if case.kind == "pii" else (), json_strings=True)
    needle = case.needle.encode()
    pos = raw.find(needle)
    while pos != -1:
        end = pos + len(needle)
        if not any(
            f.start <= pos and end <= f.end and f.kind == case.kind and (case.type is None or f.type == case.type)
            for f in result.findings
        ):
            return "no finding covers it: " + ",".join(f.type for f in result.findings)
        pos = raw.find(needle, end)
    masked = _MARKER.sub("", result.masked(raw).decode())  # a marker names the type (`rubygems_…`)
    w = min(8, len(case.value))
    pieces = {case.value[i : i + w] for i in range(0, len(case.value) - w + 1)}
    pieces |= {case.needle[i : i + w] for i in range(0, len(case.needle) - w + 1)}
    rest = _views(case.text.replace(case.needle, ""))  # pieces the text holds anyway (`https://`)
    pieces = {p for p in pieces if not any(p in r for r in rest)}
    for view in _views(masked):
        if any(p in view for p in pieces):
            return "part of it is left visible"
    return None
