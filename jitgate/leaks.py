"""What the inspection decides for one message, whatever protocol carried it.

Which masking profile applies, which header fields are scanned (and which are the client's own
credential, a date or framing, so not), what a scan found as the records a flow keeps, whether a
request with findings is blocked or goes on masked, what a body that cannot be read means, and
what a caller is told about a finding (type and place, never the value). The HTTP addon
(addon/leak_guard.py) reads the message and applies these answers; another protocol's listener
calls the same functions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote_to_bytes

from jitgate.decoding import bomb_check
from jitgate.dialects import CLIENT_CREDENTIAL_HEADERS
from jitgate.errors import (
    BodyNotDecodable,
    JitgateError,
    PayloadTooLarge,
    UpstreamResponseInvalid,
    UpstreamResponseTooLarge,
)
from jitgate.inspect import Scanner, actions, jsonpath
from jitgate.inspect.masking import Hit
from jitgate.inspect.scanner import ScanResult
from jitgate.policy import Connection, MaskProfile, Policy
from jitgate.records import Finding
from jitgate.token import Claims

Unreadable = Literal["undecodable", "too_large"]
Verdict = Literal["block", "mask", "allow"]

# Headers that carry the caller's own credential or the JIT token: credential_inject strips them.
CREDENTIAL_HEADERS = frozenset(name.lower() for name in CLIENT_CREDENTIAL_HEADERS)
SKIP_HEADERS = frozenset({"content-length", "content-type", "content-encoding", "transfer-encoding", "host"})
# HTTP-date headers (RFC 9110 5.6.7). A value that is exactly an IMF-fixdate holds a date and
# nothing else, but its digits are a phone candidate: scanning it cost every response a second
# pass over each header. Any other value of these headers is scanned like the rest.
DATE_HEADERS = frozenset(
    {"date", "expires", "last-modified", "if-modified-since", "if-unmodified-since", "retry-after"}
)
_IMF_FIXDATE = re.compile(
    rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-3][0-9] (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    rb"[0-9]{4} [0-2][0-9]:[0-5][0-9]:[0-6][0-9] GMT"
)


def profile_for(policy: Policy | None, claims: Claims | None, conn: Connection | None, host: str) -> MaskProfile:
    """The masking profile of a message: the token's, else its connection's, else the default.

    Without a token only a host served by a single connection names a profile (a shared host
    cannot say whose, so the policy's default applies)."""
    if policy is None:
        return MaskProfile()
    if claims is not None:
        return policy.profile(claims.mask)
    conn = conn or policy.connection_for_host(host)
    return policy.profile(conn.mask if conn is not None else "default")


def finding_records(
    plan: actions.Plan, where: str, hits: Sequence[Hit], json_body: bytes | None = None
) -> list[Finding]:
    """The findings of a scan's `hits` at `where`, each with its action (and JSON path in a JSON body)."""
    paths = (
        jsonpath.locate(json_body, [f.start for f in hits], hidden=[(f.start, f.end) for f in hits])
        if json_body and hits
        else {}
    )
    # Built from the scanner's own values, so not validated again (a busy body has thousands).
    return [
        Finding.model_construct(
            type=f.type, kind=f.kind, location=where, action=actions.action_for(plan, f), tag=f.tag,
            path=paths.get(f.start) or None, offset=f.start, length=f.end - f.start, encoding=f.encoding,
        )
        for f in hits
    ]


def public(finding: Finding) -> dict[str, Any]:
    """What a 403 tells the caller about a finding: type and place (never the value)."""
    return finding.public()


def scan(
    scanner: Scanner, data: bytes, plan: actions.Plan, literals: Sequence[bytes], *, json_text: bool = False
) -> ScanResult:
    """The findings of `data` under `plan`. PII the profile allows is found (the record keeps the
    body out when it holds some) but left as it is: the edits then mask secrets only."""
    result = scanner.scan(data, pii=plan.pii_types, literals=literals, json_strings=json_text)
    if plan.pii == "allow" and any(f.kind != "secret" for f in result.findings):
        secrets_only = scanner.scan(data, literals=literals, json_strings=json_text)
        return ScanResult(result.findings, secrets_only.edits)
    return result


def header_fields(side: str, headers: Iterable[tuple[str, str]]) -> list[tuple[str, bytes]]:
    """The header fields that are scanned: not framing, not an IMF-fixdate, and in a request not
    the client's own credential (credential_inject strips those)."""
    fields: list[tuple[str, bytes]] = []
    for name, value in headers:
        low = name.lower()
        if low in SKIP_HEADERS or (side == "request" and low in CREDENTIAL_HEADERS):
            continue
        raw = value.encode("utf-8", "surrogateescape")
        if low in DATE_HEADERS and _IMF_FIXDATE.fullmatch(raw):
            continue
        fields.append((name, raw))
    return fields


@dataclass
class HeaderScan:
    """What the header fields held: the findings, their records, and the edits in field order
    (name, masked value; or None: the header goes, its name held a finding)."""

    findings: list[Hit] = field(default_factory=list)
    records: list[Finding] = field(default_factory=list)
    edits: list[tuple[str, str | None]] = field(default_factory=list)


def scan_headers(
    scanner: Scanner, plan: actions.Plan, side: str, fields: Sequence[tuple[str, bytes]], literals: Sequence[bytes]
) -> HeaderScan:
    out = HeaderScan()
    # One pass over all names and values first: most messages have nothing in their headers.
    names = [name.encode("utf-8", "surrogateescape") for name, _ in fields]
    if not scanner.may_find([*names, *(raw for _, raw in fields)], pii=plan.pii_types, literals=literals):
        return out
    for (name, raw), encoded in zip(fields, names, strict=True):
        in_name = scan(scanner, encoded, plan, literals)
        if in_name.findings:
            # A name is no place for a value: the header goes, and its name is in no record.
            out.records += finding_records(plan, f"{side}.header-name", in_name.findings)
            out.findings += in_name.findings
            out.edits.append((name, None))
            continue
        result = scan(scanner, raw, plan, literals)
        if result.findings:
            out.records += finding_records(plan, f"{side}.header:{name.lower()}", result.findings)
            out.findings += result.findings
            out.edits.append((name, result.masked(raw).decode("utf-8", "surrogateescape")))
    return out


def scan_target(scanner: Scanner, plan: actions.Plan, target: str) -> ScanResult:
    """Scan a request target; what is found only once percent-decoded has no edit (nothing to
    mask in place: the request blocks, or its target is withheld from the record)."""
    raw = target.encode("utf-8", "surrogateescape")
    result = scan(scanner, raw, plan, [])
    if not result.findings and b"%" in raw:
        result = scan(scanner, unquote_to_bytes(raw), plan, [])
        result.edits.clear()
    return result


def masked_text(result: ScanResult, text: str) -> str:
    return result.masked(text.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")


def request_verdict(
    plan: actions.Plan, found: Sequence[Hit], *, target_unmaskable: bool, review_held: bool
) -> Verdict:
    """What becomes of a request with `found`: blocked, forwarded masked, or as it is.

    `review` is forwarded (masked) only where something holds it for a human (`review_held`);
    a finding in the target that cannot be masked in place blocks whatever its action."""
    decision = actions.decide(plan, found)
    if decision == "review" and not review_held:
        decision = "block"  # nobody can hold it for review: fail closed
    if decision == "block" or (decision != "allow" and target_unmaskable):
        return "block"
    return "mask" if found else "allow"


def body_problem(raw: bytes, encoding: str, limit: int) -> Unreadable | None:
    """Why a body cannot be inspected, sized before it is decoded (a bomb costs one piece)."""
    over = bomb_check(raw, encoding, limit)
    if over is False:
        return None
    return "undecodable" if over is None else "too_large"


def unreadable_request(why: Unreadable, limit: int) -> JitgateError:
    if why == "too_large":
        return PayloadTooLarge(f"the request body exceeds the inspection limit of {limit} bytes")
    return BodyNotDecodable("the request body's content encoding cannot be decoded")


def unreadable_response(why: Unreadable) -> JitgateError:
    if why == "too_large":
        return UpstreamResponseTooLarge("the upstream response exceeds the gateway's inspection limit")
    return UpstreamResponseInvalid("the upstream response cannot be decoded for inspection")
