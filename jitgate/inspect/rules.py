"""The detection rules: secret formats (prefix-anchored where the provider has a prefix) and PII.

A rule is one bytes regex plus an optional validator. When the pattern has a group named `s`,
that group is the span to mask (the password of a database URL, the value of an assignment);
otherwise the whole match is. Lookarounds sit only at the edges of a pattern and contain only
character classes: the Hyperscan engine drops them (its pattern is then a superset) and lets
Python's `re` confirm, so both engines return the same matches.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Literal

from jitgate.inspect import validators as v

Kind = Literal["secret", "pii"]


def _lb(chars: str) -> str:
    """Left boundary: not after one of `chars`, but right after a `\\n`/`\\t`/`\\r` escape is fine."""
    return rf"(?:(?<=\\[nrt])|(?<![{chars}]))"


_L = _lb("A-Za-z0-9_")  # left word boundary that also works before '-'
_R = r"(?![A-Za-z0-9_])"
_RD = r"(?![A-Za-z0-9_-])"
_B64R = r"(?![A-Za-z0-9+/=])"
# An assignment, escape-aware: `key = v`, `key: v`, `"key": "v"`, `\"key\": \"v\"` (JSON in JSON).
_ASSIGN_OP = r"""\\?["']?[ \t]{0,4}(?::=|=>|[:=])"""
_ASSIGN = _ASSIGN_OP + r"""[ \t]{0,4}\\?["']?"""
# A value holds the punctuation passwords hold (`$ ; , ( ) [ ] { } | < >`) and runs up to 4 kB; it
# ends before whitespace, a quote or a backslash, one closing punctuation mark before them left out
# (`f(password=Xy7…, timeout=5)`: the comma is no part of it).
_VALUE_CHARS = r"""[^\s"'\\`]"""
_VALUE = rf"""(?P<s>{_VALUE_CHARS}{{8,4096}}?)(?=[,;)}}\]>|.]?(?:[\s"'\\`]|$))"""
_KEYWORDS = (
    r"(?i:password|passwd|pwd|secret|client_secret|secret_key|api_key|apikey|api-key|"
    r"access_key|private_key|auth_token|access_token|refresh_token|token|credentials?)"
)
# Keys that end in "token" but hold no credential: pagination cursors, continuation and
# idempotency tokens (`next_page_token`, `nextPageToken`, `idempotency_token`, ...). A request that
# carries one is ordinary; with the default profile (request secrets blocked) a finding there
# refused it (issue 23). Fixed-width lookbehinds before the bare keyword `token`, one per prefix and
# separator, in the Python pattern only (Hyperscan's prefilter stays the wider one; Python confirms).
_BENIGN_TOKEN_PREFIXES = ("page", "next", "continuation", "idempotency", "cursor", "pagination", "resume", "sync")


def _not_after(words: tuple[str, ...]) -> str:
    def caseless(text: str) -> str:
        return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in text)

    return "".join(f"(?<!{caseless(w)}{sep})" for w in words for sep in ("", "_", "-", "."))


_BENIGN_LB = _not_after(_BENIGN_TOKEN_PREFIXES)
_CREDENTIAL_KEYWORDS = _KEYWORDS.replace("|token|", "|" + _BENIGN_LB + "token|")
_LOOKAROUND = re.compile(r"\(\?<?[!=](?:\[(?:\\.|[^\]\\])*\]|\\.|[^()\[\\])*\)")


@dataclass(frozen=True)
class Rule:
    """One detectable type."""

    name: str
    kind: Kind
    pattern: str
    validator: v.Validator | None = None
    # Lower wins when two findings overlap: provider formats beat generic assignments.
    priority: int = 1
    placeholders_ok: bool = field(default=False)
    # A prefix of `pattern` Hyperscan looks for instead of the whole pattern: one report per
    # occurrence instead of one per possible end of a variable-length match.
    trigger: str | None = None
    # An explicit Hyperscan pattern, for the few rules whose superset is best written by hand. With
    # a trigger: the trigger and what every match needs right after it (one start per occurrence,
    # fewer false starts than the trigger alone).
    hs: str | None = None
    # `hs` is a superset of how every match ENDS (not a prefix): Hyperscan runs it without start
    # of match and `re` confirms in the window of the rule's max length before each reported end.
    # For a rule whose Hyperscan form is slow on prose (phone: separators everywhere).
    hs_ends: bool = False
    # Compiled into a Hyperscan database of its own: a pattern that keeps the others from being
    # accelerated when they share one (each extra database is one more short pass).
    hs_alone: bool = False
    # For an `hs_ends` rule: the bytes every match is made of up to `hs_run_skip` bytes before
    # the reported end, where the match is led by a byte not among them (a lookbehind). `re`
    # then confirms from where that run starts instead of the window's far end.
    hs_run: bytes | None = None
    hs_run_skip: int = 0
    # The bytes a match can start with (None: any): `re` stops confirming a region once what is
    # left of it holds none (after a phone number, only its boundary byte is left).
    hs_lead: bytes | None = None

    @cached_property
    def regex(self) -> re.Pattern[bytes]:
        return re.compile(self.pattern.encode("ascii"))

    @cached_property
    def hs_pattern(self) -> bytes:
        """The pattern Hyperscan compiles: the same without edge lookarounds (a superset)."""
        return (self.hs or _LOOKAROUND.sub("", self.trigger or self.pattern)).encode("ascii")

    @cached_property
    def hs_max_len(self) -> int:
        """Longest possible match of what Hyperscan looks for."""
        return _width(self.hs or self.trigger or self.pattern)

    @cached_property
    def max_len(self) -> int:
        """Longest possible match, so a confirming window of this size always suffices."""
        return _width(self.pattern)

    @cached_property
    def has_group(self) -> bool:
        """Whether the pattern names the span to mask (`s`)."""
        return "s" in self.regex.groupindex

    @cached_property
    def valid(self) -> v.Validator:
        """Whether a matched value is a finding: not a placeholder (secrets), then the validator."""
        validator = self.validator
        if self.kind != "secret" or self.placeholders_ok:
            return validator if validator is not None else _always
        if validator is None:
            return v.not_placeholder
        return lambda value: v.not_placeholder(value) and validator(value)


def _always(value: bytes) -> bool:
    return True


def _width(pattern: str) -> int:
    _low, high = re._parser.parse(pattern).getwidth()  # type: ignore[attr-defined]
    return int(high)


def _literal_first(literal: str) -> str:
    """`literal` with the `_L` boundary checked behind it: Python's `re` then searches for the
    literal quickly (the pure-`re` engine's speed), with the same matches as `_L + literal`."""
    return rf"{literal}(?:(?<=\\[nrt]{literal})|(?<![A-Za-z0-9_]{literal}))"


def _prefixed(name: str, prefix: str, body: str, *, validator: v.Validator | None = None, right: str = _RD) -> Rule:
    head = re.match(r"(?:[A-Za-z0-9_-]|\\[.$])+", prefix)
    # The literal head of the prefix first, the rest of the prefix after its boundary check.
    start = f"{_L}{prefix}" if head is None else _literal_first(head.group()) + prefix[head.end() :]
    return Rule(name, "secret", f"{start}{body}{right}", validator, trigger=start if prefix else None)


def _context(name: str, keywords: str, value: str, right: str = _R, validator: v.Validator | None = None) -> Rule:
    pattern = f"(?i:{keywords}){_ASSIGN}(?P<s>{value}){right}"
    return Rule(name, "secret", pattern, validator, trigger=f"(?i:{keywords}){_ASSIGN_OP}")


_GH = "[A-Za-z0-9]{36}"
# URL schemes as flat literal alternations: triggers both engines find fast.
_DB_SCHEMES = (
    r"(?i:postgresql|postgres|mysql|mariadb|mongodb\+srv|mongodb|rediss|redis|amqps|amqp|mssql|sqlserver|oracle|"
    r"cockroachdb|clickhouse|snowflake)://"
)
_URL_SCHEMES = r"(?i:https|http|ftps|ftp|sftp|ssh|git)://"
# The literal first, its left boundary checked behind it (see `_prefixed`). The key id's 16 characters
# are [A-Z0-9], as detect-secrets and trufflehog match them: AWS issues base32 ids, but a rule that
# reads only [A-Z2-7] lets a key with a 0, 1, 8 or 9 pass unmasked (issue 16, item 13).
_AWS_ID = r"(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])(?:(?<=\\[nrt]....)|(?<![A-Z0-9]....))"

SECRET_RULES: tuple[Rule, ...] = (
    # Cloud providers
    Rule(
        "aws_access_key_id",
        "secret",
        _AWS_ID + r"[A-Z0-9]{16}(?![A-Z0-9])",
        trigger=_AWS_ID,
    ),
    _context("aws_secret_access_key", r"aws_?secret_?(?:access_?)?key", "[A-Za-z0-9/+]{40}", _B64R),
    _context("aws_session_token", r"aws_?session_?token", "[A-Za-z0-9/+=]{100,1200}", _B64R),
    _prefixed("google_api_key", "AIza", "[0-9A-Za-z_-]{35}"),
    _prefixed("google_oauth_client_secret", "GOCSPX-", "[0-9A-Za-z_-]{28}"),
    _prefixed("google_oauth_access_token", r"ya29\.", "[0-9A-Za-z_-]{30,300}"),
    Rule(
        "azure_storage_connection_string",
        "secret",
        # `AccountKey=` alone: the key follows `BlobEndpoint=` or `AccountName=` in any order.
        r"AccountKey=(?P<s>[A-Za-z0-9+/]{86}==)",
        trigger="AccountKey=",
    ),
    Rule(
        "azure_sas_signature",
        "secret",
        r"[?&]sv=\d{4}-\d\d-\d\d&[^\s\"'<>]{0,300}?&sig=(?P<s>[A-Za-z0-9%+/]{40,64}(?:%3D|=)?)",
        trigger=r"[?&]sv=",
    ),
    Rule("azure_ad_client_secret", "secret", rf"{_L}[A-Za-z0-9_~.]{{3}}\dQ~[A-Za-z0-9_~.-]{{31,34}}{_RD}"),
    _prefixed("digitalocean_pat", "dop_v1_", "[a-f0-9]{64}"),
    _prefixed("digitalocean_oauth_token", "doo_v1_", "[a-f0-9]{64}"),
    _prefixed("digitalocean_refresh_token", "dor_v1_", "[a-f0-9]{64}"),
    _prefixed("alibaba_access_key_id", "LTAI", "[A-Za-z0-9]{20}"),
    _prefixed("heroku_api_key", "HRKU-", "[A-Za-z0-9_-]{60}"),
    _prefixed("databricks_token", "dapi", "[a-f0-9]{32}(?:-[0-9])?"),
    # Code hosting and CI
    _prefixed("github_pat", "ghp_", _GH, validator=v.github_checksum),
    _prefixed("github_oauth_token", "gho_", _GH, validator=v.github_checksum),
    _prefixed("github_user_to_server_token", "ghu_", _GH, validator=v.github_checksum),
    _prefixed("github_server_to_server_token", "ghs_", _GH, validator=v.github_checksum),
    _prefixed("github_refresh_token", "ghr_", _GH, validator=v.github_checksum),
    _prefixed("github_fine_grained_pat", "github_pat_", "[A-Za-z0-9]{22}_[A-Za-z0-9]{59}"),
    # Legacy (20), routable (27 or more, `.`, 9) and the `.xx.` form.
    _prefixed("gitlab_pat", "glpat-", r"[A-Za-z0-9_-]{20,300}(?:\.[0-9a-z]{2}\.[a-z0-9]{9}|\.[A-Za-z0-9_-]{9})?"),
    _prefixed("gitlab_deploy_token", "gldt-", "[A-Za-z0-9_-]{20}"),
    _prefixed("gitlab_runner_token", "glrt-", "[A-Za-z0-9_-]{20,64}"),
    _prefixed("gitlab_pipeline_trigger_token", "glptt-", "[a-f0-9]{40}"),
    _prefixed("gitlab_oauth_secret", "gloas-", "[a-f0-9]{64}"),
    _prefixed("gitlab_feed_token", "glft-", "[A-Za-z0-9_-]{20}"),
    _prefixed("gitlab_agent_token", "glagent-", "[A-Za-z0-9_-]{50}"),
    _prefixed("gitlab_scim_token", "glsoat-", "[A-Za-z0-9_-]{20}"),
    _prefixed("gitlab_cicd_job_token", "glcbt-", "[0-9a-fA-F_]{1,5}[A-Za-z0-9_-]{20}"),
    _prefixed("atlassian_api_token", "ATATT3", "[A-Za-z0-9_=-]{186}"),
    _prefixed("bitbucket_app_password", "ATBB", "[A-Za-z0-9]{32}"),
    _prefixed("npm_token", "npm_", "[A-Za-z0-9]{36}"),
    _prefixed("pypi_token", "pypi-AgEIcHlwaS5vcmc", "[A-Za-z0-9_-]{50,300}"),
    _prefixed("rubygems_api_key", "rubygems_", "[a-f0-9]{48}"),
    _prefixed("dockerhub_pat", "dckr_pat_", "[A-Za-z0-9_-]{27}"),
    _prefixed("nuget_api_key", "oy2", "[a-z0-9]{43}", validator=v.high_entropy),
    _prefixed("clojars_token", "CLOJARS_", "[a-z0-9]{60}"),
    _prefixed("terraform_cloud_token", "", r"[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_=-]{60,70}"),
    # Service tokens (`hvs.`, ~95 characters) and batch tokens (`hvb.`, 138 to 300).
    _prefixed("hashicorp_vault_token", r"hv[sb]\.", "[A-Za-z0-9_-]{24,300}"),
    _context("hashicorp_vault_legacy_token", r"(?:x-)?vault_?token", r"s\.[A-Za-z0-9]{24}", validator=v.high_entropy),
    _prefixed("onepassword_service_account_token", "ops_eyJ", "[A-Za-z0-9+/]{250,8000}={0,3}", right=_B64R),
    _prefixed("artifactory_api_key", "AKCp", "[A-Za-z0-9]{69}", right=_R),
    _prefixed("artifactory_reference_token", "cmVmd", "[A-Za-z0-9]{59}", validator=v.high_entropy, right=_R),
    _prefixed("cloudflare_origin_ca_key", r"v1\.0-", "[a-f0-9]{24}-[a-f0-9]{146}", right=_R),
    _prefixed("adobe_client_secret", "p8e-", "[A-Za-z0-9]{32}", validator=v.high_entropy, right=_R),
    _prefixed("doppler_token", r"dp\.(?:pt|st|sa|ct|scim|audit)\.", "[A-Za-z0-9]{40,44}"),
    _prefixed("pulumi_token", "pul-", "[a-f0-9]{40}"),
    # Chat and notifications
    _prefixed("slack_bot_token", "xoxb-", "[0-9]{10,13}-[0-9]{10,13}-[A-Za-z0-9]{24}"),
    _prefixed("slack_user_token", "xoxp-", "[0-9]{10,13}-[0-9]{10,13}-[0-9]{10,13}-[a-f0-9]{32}"),
    _prefixed("slack_legacy_token", "xox[ars]-", "[0-9A-Za-z-]{10,250}"),
    _prefixed("slack_config_token", r"xoxe\.xox[bp]-", "[0-9A-Za-z-]{30,250}"),
    _prefixed("slack_config_refresh_token", "xoxe-[0-9]-", "[A-Za-z0-9]{140,160}"),
    _prefixed("slack_app_token", "xapp-", "[0-9]-[A-Z0-9]{9,12}-[0-9]{10,14}-[a-f0-9]{64}"),
    Rule(
        "slack_webhook",
        "secret",
        r"https://hooks\.slack\.com/(?:services|workflows|triggers)/T[A-Z0-9]{8,12}/B[A-Z0-9]{8,12}/[A-Za-z0-9]{24}"
        + _R,
        trigger=r"https://hooks\.slack\.com/",
    ),
    Rule(
        "discord_webhook",
        "secret",
        r"https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/[0-9]{17,20}/[A-Za-z0-9_-]{60,68}" + _RD,
        trigger=r"https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/",
    ),
    Rule("telegram_bot_token", "secret", _lb("0-9") + rf"[0-9]{{8,10}}:AA[A-Za-z0-9_-]{{33}}{_RD}"),
    # `SK` starts many words: Hyperscan looks for the whole key, so it reports few false starts.
    replace(_prefixed("twilio_api_key", "SK", "[0-9a-f]{32}", right=_R), hs="SK[0-9a-f]{32}"),
    _context("twilio_auth_token", r"twilio_?auth_?token", "[a-f0-9]{32}"),
    _prefixed("sendgrid_api_key", r"SG\.", r"[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}"),
    _prefixed("mailgun_api_key", "key-", "[0-9a-f]{32}", right=_R),
    Rule("mailchimp_api_key", "secret", rf"{_L}[0-9a-f]{{32}}-us[0-9]{{1,2}}{_R}"),
    _prefixed("postman_api_key", "PMAK-", "[a-f0-9]{24}-[a-f0-9]{34}"),
    # Payments and commerce
    _prefixed("stripe_secret_key", "sk_live_", "[0-9A-Za-z]{24,99}"),
    _prefixed("stripe_restricted_key", "rk_live_", "[0-9A-Za-z]{24,99}"),
    _prefixed("stripe_webhook_secret", "whsec_", "[A-Za-z0-9]{32,64}"),
    _prefixed("square_access_token", "EAAA", "[A-Za-z0-9_-]{60}"),
    _prefixed("square_access_token", "sq0atp-", "[A-Za-z0-9_-]{22,60}"),
    _prefixed("square_oauth_secret", "sq0csp-", "[0-9A-Za-z_-]{43}"),
    _prefixed("braintree_access_token", r"access_token\$production\$", r"[0-9a-z]{16}\$[0-9a-f]{32}"),
    _prefixed("shopify_access_token", "shp(?:at|ca|pa)_", "[a-fA-F0-9]{32}"),
    _prefixed("shopify_shared_secret", "shpss_", "[a-fA-F0-9]{32}"),
    # LLM and rerank vendors
    _prefixed("openai_project_key", "sk-proj-", "[A-Za-z0-9_-]{40,200}"),
    _prefixed("openai_service_account_key", "sk-svcacct-", "[A-Za-z0-9_-]{40,200}"),
    _prefixed("openai_admin_key", "sk-admin-", "[A-Za-z0-9_-]{40,200}"),
    replace(
        _prefixed("openai_legacy_key", "sk-", "[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}"), hs="sk-[A-Za-z0-9]{20}T3BlbkFJ"
    ),
    _prefixed("anthropic_api_key", "sk-ant-api03-", "[A-Za-z0-9_-]{93}AA"),
    _prefixed("anthropic_admin_key", "sk-ant-admin01-", "[A-Za-z0-9_-]{93}AA"),
    _prefixed("huggingface_token", "hf_", "[A-Za-z]{34}"),
    _prefixed("huggingface_org_token", "api_org_", "[A-Za-z]{34}"),
    _prefixed("groq_api_key", "gsk_", "[A-Za-z0-9]{52}"),
    _prefixed("replicate_api_token", "r8_", "[A-Za-z0-9]{37}"),
    _prefixed("perplexity_api_key", "pplx-", "[A-Za-z0-9]{48}"),
    _prefixed("xai_api_key", "xai-", "[A-Za-z0-9]{80}"),
    _prefixed("voyage_api_key", "pa-", "[A-Za-z0-9_-]{43}", validator=v.high_entropy),
    _prefixed("jina_api_key", "jina_", "[A-Za-z0-9_-]{60}"),
    _prefixed("langsmith_api_key", "lsv2_(?:pt|sk)_", "[a-f0-9]{32}_[a-f0-9]{10}"),
    _prefixed("pinecone_api_key", "pcsk_", "[A-Za-z0-9_]{40,100}"),
    _context("cohere_api_key", r"(?:co|cohere)_?api_?key", "[A-Za-z0-9]{40}", validator=v.high_entropy),
    _context("mistral_api_key", r"mistral_?api_?key", "[A-Za-z0-9]{32}", validator=v.high_entropy),
    # Observability and SaaS
    _prefixed("newrelic_user_key", "NRAK-", "[A-Z0-9]{27}"),
    _prefixed("sentry_auth_token", "sntrys_", "[A-Za-z0-9+/=_]{50,200}"),
    _prefixed("sentry_user_token", "sntryu_", "[a-f0-9]{64}"),
    _prefixed("grafana_cloud_token", "glc_", "[A-Za-z0-9+/]{32,400}={0,3}", right=_B64R),
    _prefixed("grafana_service_account_token", "glsa_", "[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}"),
    _prefixed("linear_api_key", "lin_api_", "[A-Za-z0-9]{40}"),
    _prefixed("notion_token", "ntn_", "[A-Za-z0-9]{46}"),
    _prefixed("figma_token", "figd_", "[A-Za-z0-9_-]{40}"),
    _prefixed("planetscale_token", "pscale_(?:tkn|pw|oauth)_", "[A-Za-z0-9_.-]{43}"),
    _prefixed("supabase_token", "sbp_", "[a-f0-9]{40}"),
    _prefixed("flyio_token", "fo1_", "[A-Za-z0-9_-]{43}"),
    _prefixed("dynatrace_token", r"dt0c01\.", r"[A-Z0-9]{24}\.[A-Z0-9]{64}"),
    _prefixed("age_secret_key", "AGE-SECRET-KEY-1", "[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}"),
    # Structures
    Rule(
        "private_key",
        "secret",
        r"-----BEGIN (?:[A-Z0-9]{1,12} ){0,3}PRIVATE KEY(?: BLOCK)?-----"
        # Armor headers (`Comment: …`, `Version: …`) may hold any character but a quote.
        r'[^"]{20,8192}?'
        r"-----END (?:[A-Z0-9]{1,12} ){0,3}PRIVATE KEY(?: BLOCK)?-----",
        priority=0,
        placeholders_ok=True,
        trigger="-----BEGIN ",
    ),
    Rule(
        "jwt",
        "secret",
        _literal_first("eyJ") + r"[A-Za-z0-9_-]{8,1000}\.eyJ[A-Za-z0-9_-]{8,4000}\.[A-Za-z0-9_-]{16,1000}" + _RD,
        v.jwt,
        priority=2,
        trigger=_literal_first("eyJ"),
    ),
    Rule(
        "database_password",
        "secret",
        _DB_SCHEMES + r"[^\s:/@\"'\\]{0,64}:(?P<s>[^\s@\"'\\/]{1,128})@[A-Za-z0-9\[]",
        trigger=_DB_SCHEMES,
    ),
    Rule(
        "url_password",
        "secret",
        _URL_SCHEMES + r"[^\s:/@\"'\\]{1,64}:(?P<s>[^\s@\"'\\/]{6,128})@[A-Za-z0-9\[]",
        priority=3,
        trigger=_URL_SCHEMES,
    ),
    Rule(
        "authorization_header",
        "secret",
        r"(?i:authorization|x-api-key|api-key)\\?[\"']?[ \t]{0,4}:[ \t]{0,4}f?\\?[\"']?(?i:bearer |token |basic )?"
        r"(?P<s>[A-Za-z0-9._~+/=-]{16,512})" + r"(?![A-Za-z0-9._~+/=-])",
        v.high_entropy,
        priority=8,
        trigger=r"(?i:authorization|x-api-key|api-key)",
    ),
    Rule(
        "generic_secret",
        "secret",
        _CREDENTIAL_KEYWORDS + _ASSIGN + _VALUE,
        v.generic_secret,
        priority=9,
        trigger=_CREDENTIAL_KEYWORDS + _ASSIGN_OP,
        # Keywords are common words: Hyperscan also looks for the shortest value after them.
        hs=_KEYWORDS + _ASSIGN + _VALUE_CHARS + "{8}",
    ),
)

# Card numbers: 4-4-4-(1..7) or 4-4-4-4-(1..3) (Visa, Mastercard, Discover, JCB, UnionPay, 13 to 19 digits in fours)
# or 4-6-(4..5) (American Express 4-6-5, Diners Club 4-6-4); the validator checks Luhn and issuer.
_CARD = r"[0-9]{4}(?:(?:[ -]?[0-9]{4}){2}[ -]?(?:[0-9]{4}[ -]?[0-9]{1,3}|[0-9]{1,7})|[ -]?[0-9]{6}[ -]?[0-9]{4,5})"
_IBAN = r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?"
# What the negative lookahead ending a PII pattern lets follow, as a byte Hyperscan consumes: it
# then reports the ends that can end a match, not every shorter prefix of a digit run (the IBAN
# rule reported ~12 ends per IBAN, ~5 per card number).
_END_BOUNDARY = "(?:[^%s]|$)"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_H = r"[0-9a-fA-F]{1,4}"
# Every textual IPv6 form: an IPv4 tail (`::ffff:192.0.2.1`), full, compressed (`fd35::21cc`).
_IPV6 = (
    rf"(?:(?:{_H}:){{6}}|(?:{_H}(?::{_H}){{0,4}})?::(?:{_H}:){{0,4}}){_IPV4}"
    rf"|(?:{_H}:){{7}}{_H}|(?:{_H}(?::{_H}){{0,6}})?::(?:{_H}(?::{_H}){{0,6}})?"
)
# Versions, not addresses: `agent to 1.2.3.4`, `version 1.2.3.4`, `v1.2.3.4` (fixed-width lookbehinds,
# in Python's pattern only: Hyperscan's prefilter is wider, Python confirms).
_VERSION_WORDS = ("version ", "version: ", "version=", "ver ", "release ", "build ", "firmware ", "agent to ",
                  "upgraded to ", "updated to ", "update to ", "upgrade to ", "v", "release-", "version-")


def _not_after_text(words: tuple[str, ...]) -> str:
    def caseless(text: str) -> str:
        return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in text)

    return "".join(f"(?<!{caseless(w)})" for w in words)


_NOT_VERSION = _not_after_text(_VERSION_WORDS)

PII_RULES: tuple[Rule, ...] = (
    Rule(
        "email",
        "pii",
        _lb("A-Za-z0-9._%+-")
        + r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,4}\.[A-Za-z]{2,24}(?![A-Za-z0-9-])",
        v.email,
        # What every match holds right after its local part: `@` and a domain character, reported
        # where that ends (`hs_ends`: no start of match; `re` confirms in the window before). With
        # the local part in the Hyperscan pattern (unbounded, start of match) a rerank answer's
        # digits cost 12 us per 4 kB; bounded, prose scanned at ~300 MB/s next to the phone rule.
        # In a database of its own: shared, `@` slowed the others on prose ~8x.
        hs=r"@[A-Za-z0-9-]",
        hs_ends=True,
        hs_alone=True,
        # The local part before the reported `@` and domain character: the window of 411 bytes
        # before each `@` shrinks to the run of local-part characters.
        hs_run=b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-",
        hs_run_skip=2,
    ),
    # Every grouping (US 3-3-4, `(415) 5550132`, FR 2-2-2-2-2, ES 3-2-2-2, IN 5-5, JP 2-4-4, NL 1-8,
    # `+33 6 12 34 56 78`): an area code in parentheses and the rest in one run or more groups, or
    # digit groups of up to 8 joined by one separator each; the validator counts 8-15 digits and asks
    # phonenumbers. One rule: a second, narrower US-shaped rule beside it cost the PII path ~40%.
    Rule(
        "phone",
        "pii",
        _lb("\\w+.-")
        + r"(?:\+[1-9][0-9]{0,2}[ .-]?)?"
        r"(?:\([0-9]{1,4}\)[ .-]?[0-9]{1,8}(?:[ .-][0-9]{2,8}){0,5}|[0-9]{1,6}(?:[ .-][0-9]{2,8}){1,5})"
        r"(?![\w.-]?[0-9A-Za-z])",
        v.phone,
        # How every match ends: a digit and a separator, or `)` and a separator or none, then 2-8
        # digits and no letter or digit. The whole pattern in Hyperscan scans prose at ~1 GB/s (a
        # space can start a separator); this much faster, and the digit runs of a rerank answer's
        # scores (`0.13629831567813933`) are no candidates.
        hs=r"(?:[0-9][ .-]|\)[ .-]?)[0-9]{2,8}(?:[^0-9A-Za-z]|$)",
        hs_ends=True,
        # Digits, separators, parentheses and `+` up to the last digit (the byte before the
        # reported end is the boundary, or a digit at the end of the text).
        hs_run=b"0123456789 .()+-",
        hs_run_skip=1,
        hs_lead=b"0123456789+(",
    ),
    # E.164 written without separators: `+14155550132`.
    Rule("phone", "pii", _lb("\\w+.-") + r"\+[1-9][0-9]{6,14}(?![0-9A-Za-z]|[.-][0-9])", v.phone),
    Rule(
        "card",
        "pii",
        _lb("0-9A-Za-z_.-") + _CARD + r"(?![0-9A-Za-z_-])",
        v.luhn,
        priority=0,  # a Luhn- and issuer-checked number is no phone number (same span: card wins)
        # The left boundary as a character Hyperscan consumes: no candidate inside a longer number
        # or a decimal fraction (a rerank answer's relevance scores).
        hs=r"(?:^|[^0-9A-Za-z_.-]|\\[nrt])" + _CARD + _END_BOUNDARY % "0-9A-Za-z_-",
    ),
    Rule(
        "iban",
        "pii",
        _lb("A-Za-z0-9") + _IBAN + r"(?![A-Za-z0-9])",
        v.iban,
        priority=0,
        hs=_IBAN + _END_BOUNDARY % "A-Za-z0-9",
    ),
    Rule(
        "ssn",
        "pii",
        _lb("0-9A-Za-z-") + r"(?:[0-9]{3}-[0-9]{2}-[0-9]{4}|[0-9]{3} [0-9]{2} [0-9]{4})(?![0-9A-Za-z-])",
        v.ssn,
        priority=0,  # `123 45 6789` is also a valid number in some numbering plan: SSN wins
    ),
    # Nine digits alone are an SSN only where the text says so (`SSN: 123456789`).
    Rule(
        "ssn",
        "pii",
        _lb("A-Za-z")
        + r"(?i:ssn|ss#|social security(?: number| no\.?)?)[ \t:#=\"']{0,4}(?P<s>[0-9]{9})(?![0-9A-Za-z])",
        v.ssn,
    ),
    Rule(
        "ip",
        "pii",
        _lb("0-9A-Za-z.:-") + _NOT_VERSION + _IPV4 + r"(?![0-9A-Za-z:]|\.[0-9A-Za-z-]|-[0-9])",
        v.ipv4,
        hs=_IPV4 + _END_BOUNDARY % "0-9A-Za-z:",
    ),
    Rule(
        "ip",
        "pii",
        _lb("0-9A-Za-z:.") + _NOT_VERSION + _IPV6 + r"(?![0-9A-Za-z:]|\.[0-9])",
        v.ipv6,
        hs=f"(?:{_IPV6})" + _END_BOUNDARY % "0-9A-Za-z:",
    ),
)

RULES: tuple[Rule, ...] = SECRET_RULES + PII_RULES
SECRET_TYPES: frozenset[str] = frozenset(r.name for r in SECRET_RULES)
PII_TYPES: frozenset[str] = frozenset(r.name for r in PII_RULES)


def _leading_literals(pattern: str, cap: int = 64) -> list[str]:
    """The literal strings a match of `pattern` can start with, alternatives and small character
    sets expanded ([] when a match can start with anything). A pattern that starts case-insensitive
    gives its literals as written, in lower, upper and title case (`Authorization`, `X-Api-Key`)."""
    parser = re._parser  # type: ignore[attr-defined]
    constants = re._constants  # type: ignore[attr-defined]

    def expand(items: list[tuple[object, object]]) -> tuple[list[str], bool]:
        outs = [""]
        for op, av in items:
            full = True
            if op is constants.LITERAL:
                alts = [chr(av)]  # type: ignore[arg-type]
            elif op is constants.IN and all(o is constants.LITERAL for o, _ in av):  # type: ignore[attr-defined]
                alts = [chr(c) for _, c in av]  # type: ignore[attr-defined]
            elif op is constants.SUBPATTERN:
                sub = av[-1]  # type: ignore[index]
                alts, full = expand(list(sub))
            elif op is constants.BRANCH:
                alts = []
                for branch in av[1]:  # type: ignore[index]
                    more, whole = expand(list(branch))
                    alts += more
                    full = full and whole
            else:
                return outs, False
            if not alts or "" in alts:
                return outs, False
            outs = [a + b for a in outs for b in alts]
            if len(outs) > cap:
                return [], False
            if not full:
                return outs, False
        return outs, True

    found, _ = expand(list(parser.parse(pattern)))
    if not pattern.startswith("(?i"):
        return sorted(set(found))
    return sorted({c for f in found for c in (f, f.lower(), f.upper(), f.title())})


def _b64_prefixes(min_bytes: int = 3) -> tuple[str, ...]:
    """The base64 characters a blob starts with when it encodes a value starting with a secret
    rule's literal prefix (`AKIA` -> `QUtJQ`): the characters the prefix alone decides. Assignment
    rules are left out (a Kubernetes `Secret` value is the value, not `password=…`) except the URL
    ones (`DATABASE_URL`), written in lower case; a form that starts with a shorter one is left out."""
    out: set[str] = set()
    for rule in SECRET_RULES:
        url = rule.name in ("database_password", "url_password")
        if rule.has_group and not url:
            continue
        for lit in _leading_literals(rule.trigger or rule.pattern):
            raw = lit.encode("utf-8")
            if len(raw) >= min_bytes and not (url and lit != lit.lower()):
                out.add(base64.b64encode(raw).decode("ascii")[: len(raw) * 8 // 6])
    return tuple(p for p in sorted(out) if not any(p != q and p.startswith(q) for q in out))


# A base64 run this long is decoded whatever it starts with (a text blob: an `.env`, a config file);
# a shorter one only when it starts with the base64 form of a secret prefix (a Kubernetes `Secret`
# holds an AWS key id, 20 bytes, as 28 characters starting `QUtJQ`), and then from SHORT_BLOB on. A
# run of 20 base64 characters is common in prose (`internationalization`), the prefixed forms are
# not: decoding every such run made the clean-text block decision ~40% slower.
MIN_BLOB = 64
SHORT_BLOB = 20
B64_PREFIXES = _b64_prefixes()
_B64_CHARS = "[A-Za-z0-9+/]"
_B64_PREFIX_ALT = "|".join(re.escape(p) for p in B64_PREFIXES)

# Where decoded content may hide a finding: base64 runs (as above) that start
# after a separator (one report per run: the Hyperscan pattern consumes the separator; a run
# glued to other word characters is not a blob), %XX escapes and the JSON escapes raw rules
# cannot see through (`\\uXXXX`, `\\/`).
DECODER_RULES: tuple[Rule, ...] = (
    Rule(
        "base64_run",
        "secret",
        r"""(?:^|(?<=[ \t\r\n"'=:,;(\[{>])|(?<=\\[nrt]))"""
        + f"(?:{_B64_CHARS}{{{MIN_BLOB}}}|(?=(?:{_B64_PREFIX_ALT})){_B64_CHARS}{{{SHORT_BLOB}}})",
        # The prefixes are literals: Hyperscan finds them at the cost of one more literal set.
        hs=r"""(?:^|[ \t\r\n"'=:,;(\[{>]|\\[nrt])""" + f"(?:{_B64_CHARS}{{{MIN_BLOB}}}|{_B64_PREFIX_ALT})",
    ),
    # Literal triggers: Hyperscan finds `%` and `\u`/`\/` much faster than the full escapes.
    Rule("percent_escape", "secret", "%[0-9A-Fa-f]{2}", trigger="%"),
    Rule("json_escape", "secret", r"\\(?:u[0-9a-fA-F]{4}|/)", trigger=r"\\[u/]"),
)
