"""The inspection decisions of jitgate.leaks and the streamed-body masker, without mitmproxy."""

from __future__ import annotations

import gzip
import random
import secrets

import pytest

from jitgate import leaks
from jitgate.devstack.policy import policy_dict
from jitgate.inspect import Scanner, StreamMasker, actions
from jitgate.inspect.masking import Hit
from jitgate.masked_stream import MaskStream, decompressor
from jitgate.policy import MaskProfile, Policy
from jitgate.token import Claims, Limits, Scope
from tests.inspect import corpus

SCANNER = Scanner(secrets.token_bytes(32))
POLICY = Policy.model_validate(policy_dict("https://issuer.test"))
EMAIL = "jane.roe" + "@" + "example.org"
REQUEST = actions.plan(MaskProfile(), "request")
RESPONSE = actions.plan(MaskProfile(), "response")


def _token() -> str:
    return corpus.PREFIXED["github_pat"](random.Random(7))


def _claims(mask: str) -> Claims:
    return Claims(
        iss="https://b.test", aud="jitgate", sub="s", iat=1, nbf=1, exp=2_000_000_000, jti="j" * 16,
        conn="cohere-test", scope=Scope(operations=("rerank",)), limits=Limits(), mask=mask,
    )


def _finding(kind: str) -> Hit:
    return Hit(type="email" if kind == "pii" else "github_pat", kind=kind, start=0, end=4, tag="t")


def test_the_tokens_profile_wins_then_the_connections_then_the_default() -> None:
    assert leaks.profile_for(None, _claims("default"), None, "h") == MaskProfile()
    name = next(iter(POLICY.profiles))
    assert leaks.profile_for(POLICY, _claims(name), None, "unknown.test") == POLICY.profile(name)
    conn = POLICY.connections["cohere-test"]
    assert leaks.profile_for(POLICY, None, conn, "unknown.test") == POLICY.profile(conn.mask)
    assert leaks.profile_for(POLICY, None, None, "no-such-host.test") == POLICY.profile("default")


def test_header_fields_skip_framing_dates_and_the_clients_credential_in_requests_only() -> None:
    headers = [
        ("Content-Length", "5"), ("Authorization", "Bearer x"), ("Date", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ("Date", "call 555 0100"), ("X-Debug", "v"),
    ]
    assert leaks.header_fields("request", headers) == [("Date", b"call 555 0100"), ("X-Debug", b"v")]
    assert [n for n, _ in leaks.header_fields("response", headers)] == ["Authorization", "Date", "X-Debug"]


def test_scan_headers_masks_values_and_drops_a_header_whose_name_holds_a_finding() -> None:
    tok = _token()
    fields = [("X-Fine", b"nothing here"), ("X-Leak", f"key {tok}".encode()), (f"X-{tok}", b"v")]
    out = leaks.scan_headers(SCANNER, RESPONSE, "response", fields, [])
    assert [name for name, _ in out.edits] == ["X-Leak", f"X-{tok}"]
    masked = out.edits[0][1]
    assert masked is not None and tok not in masked and "[REDACTED:github_pat:" in masked
    assert out.edits[1][1] is None  # the header goes
    assert [r.location for r in out.records] == ["response.header:x-leak", "response.header-name"]
    assert tok not in repr(out.records)
    assert leaks.scan_headers(SCANNER, RESPONSE, "response", fields[:1], []).edits == []


def test_a_target_found_only_percent_decoded_has_no_edit() -> None:
    plain = leaks.scan_target(SCANNER, REQUEST, f"/v2/rerank?to={EMAIL}")
    assert plain.findings and plain.edits
    encoded = leaks.scan_target(SCANNER, REQUEST, "/v2/rerank?to=" + EMAIL.replace("@", "%2540"))  # twice
    assert encoded.findings and not encoded.edits


def test_records_carry_the_action_and_the_json_path() -> None:
    body = ('{"documents": ["a", "write to ' + EMAIL + '"]}').encode()
    result = leaks.scan(SCANNER, body, REQUEST, [], json_text=True)
    (record,) = leaks.finding_records(REQUEST, "request.body", result.findings, body)
    assert (record.type, record.action, record.path) == ("email", "mask", "$.documents[1]")
    assert EMAIL not in repr(leaks.public(record)) and set(leaks.public(record)) <= set(record.plain())


@pytest.mark.parametrize(
    ("profile", "kinds", "unmaskable", "held", "verdict"),
    [
        (MaskProfile(), [], False, False, "allow"),
        (MaskProfile(), ["pii"], False, False, "mask"),
        (MaskProfile(), ["secret"], False, True, "block"),
        (MaskProfile(), ["pii"], True, False, "block"),  # in the target, not maskable in place
        (MaskProfile(request_pii="allow"), ["pii"], True, False, "mask"),  # allowed, recorded as found
        (MaskProfile(request_pii="review"), ["pii"], False, True, "mask"),  # held for a human
        (MaskProfile(request_pii="review"), ["pii"], False, False, "block"),  # nobody holds it: fail closed
    ],
)
def test_request_verdict(profile: MaskProfile, kinds: list[str], unmaskable: bool, held: bool, verdict: str) -> None:
    plan = actions.plan(profile, "request")
    found = [_finding(k) for k in kinds]
    assert leaks.request_verdict(plan, found, target_unmaskable=unmaskable, review_held=held) == verdict


def test_body_problems_are_sized_before_decoding() -> None:
    bomb = gzip.compress(b"\0" * 200_000)
    assert leaks.body_problem(bomb, "gzip", 100_000) == "too_large"
    assert leaks.body_problem(b"not gzip", "gzip", 100_000) == "undecodable"
    assert leaks.body_problem(gzip.compress(b"{}"), "gzip", 100_000) is None
    assert leaks.unreadable_request("too_large", 9).code == "payload_too_large"
    assert leaks.unreadable_request("undecodable", 9).code == "body_not_decodable"
    assert leaks.unreadable_response("too_large").code == "upstream_response_too_large"
    assert leaks.unreadable_response("undecodable").code == "upstream_response_invalid"


def _stream(limit: int = 1 << 16, encoding: str = "") -> tuple[MaskStream, list[str]]:
    decode = decompressor(encoding, limit)
    assert decode is not None
    failed: list[str] = []
    masker = StreamMasker(SCANNER, pii=RESPONSE.pii_types, window=512, json_strings=True, max_hold=limit)
    return MaskStream(masker, decode, limit, lambda e: failed.append(e.code)), failed


def test_a_stream_is_masked_across_chunks_and_kept_for_the_record() -> None:
    stream, failed = _stream()
    tok = _token()
    data = f"data: leak {tok} end\n\n".encode()
    out = b"".join(b"".join(stream(data[i : i + 7])) for i in range(0, len(data), 7)) + b"".join(stream(b""))
    assert tok.encode() not in out and b"[REDACTED:github_pat:" in out
    assert stream.complete and bytes(stream.sent) == out and failed == []


def test_a_stream_past_the_limit_is_cut_once() -> None:
    stream, failed = _stream(limit=4096, encoding="gzip")
    assert stream(gzip.compress(b"a" * 100_000)) == [] and stream(b"more") == []
    assert failed == ["upstream_response_too_large"] and not stream.complete and stream.sent == bytearray()
    assert decompressor("no-such-encoding", 10) is None
