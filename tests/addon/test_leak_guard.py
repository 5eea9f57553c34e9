"""leak_guard hooks driven with taddons/tflow: block, mask, stream, decode, refuse oversize."""

from __future__ import annotations

import gzip
import json
import random
import secrets
import time
from pathlib import Path
from typing import Any

import brotli
import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow

from addon import meta, response_masking
from addon.leak_guard import LeakGuard
from jitgate.inspect import Scanner
from jitgate.token import Claims, new_jti
from tests.bombs import bomb, traced_peak
from tests.inspect import corpus

POLICY = """
version: 1
issuers:
  - {issuer: https://oidc.test, audience: jitgate}
profiles:
  default: {}
  strict: {request_pii: block}
connections:
  rerank:
    dialect: cohere
    upstream: https://127.0.0.1:9443
    hosts: [api.cohere.com]
    credential: {secret_id: jitgate/rerank}
"""
SCANNER = Scanner(secrets.token_bytes(32))


def _token(seed: int = 0) -> str:
    return corpus.PREFIXED["github_pat"](random.Random(seed))


def _claims(mask: str = "default") -> Claims:
    now = int(time.time())
    return Claims.model_validate({
        "iss": "https://broker.test", "aud": "jitgate", "sub": "job", "iat": now, "nbf": now, "exp": now + 600,
        "jti": new_jti(), "conn": "rerank", "scope": {"operations": ["rerank"]}, "limits": {}, "mask": mask,
    })


@pytest.fixture
def guard(tmp_path: Path) -> Any:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    g = LeakGuard(scanner=SCANNER)
    with taddons.context(g) as tctx:
        tctx.configure(g, jitgate_policy=str(policy), jitgate_max_inspect_bytes=64 * 1024, jitgate_stream_window=512)
        yield g


def _flow(
    body: dict[str, Any] | bytes, *, mask: str = "default", headers: dict[str, str] | None = None
) -> http.HTTPFlow:
    f = tflow.tflow()
    f.request.host, f.request.path, f.request.method = "api.cohere.com", "/v2/rerank", "POST"
    f.request.headers["content-type"] = "application/json"
    for k, v in (headers or {}).items():
        f.request.headers[k] = v
    f.request.content = body if isinstance(body, bytes) else json.dumps(body).encode()
    meta.state_of(f).claims = _claims(mask)
    return f


def _rerank(*docs: str) -> dict[str, Any]:
    return {"model": "rerank-v3.5", "query": "which doc", "documents": list(docs)}


def test_secret_in_request_blocks_without_echoing_it(guard: LeakGuard) -> None:
    tok = _token()
    f = _flow(_rerank("fine", f"see {tok}"))
    guard.request(f)
    assert f.response is not None and f.response.status_code == 403
    answer = json.loads(f.response.content or b"")
    assert answer["code"] == "leak_blocked"
    assert [(x["type"], x["where"], x["path"]) for x in answer["findings"]] == [
        ("github_pat", "request.body", "$.documents[1]")
    ]
    assert tok not in (f.response.text or "") and tok not in json.dumps([x.plain() for x in meta.state_of(f).findings])
    assert meta.state_of(f).error == "leak_blocked"
    assert meta.state_of(f).findings[0].action == "block"


def test_pii_in_request_is_masked_and_forwarded(guard: LeakGuard) -> None:
    f = _flow(_rerank("write to ana.smith@example.org", "plain"))
    guard.request(f)
    assert f.response is None
    sent = json.loads(f.request.content or b"")
    assert sent["documents"][0].startswith("write to [REDACTED:email:") and sent["documents"][1] == "plain"
    assert meta.state_of(f).decision == "masked"
    assert meta.state_of(f).findings[0].action == "mask"


def test_strict_profile_blocks_pii(guard: LeakGuard) -> None:
    f = _flow(_rerank("SSN 123-45-6789"), mask="strict")
    guard.request(f)
    assert f.response is not None and f.response.status_code == 403


def test_gzip_request_is_decoded_scanned_and_reencoded(guard: LeakGuard) -> None:
    f = _flow(b"")
    f.request.headers["content-encoding"] = "gzip"
    f.request.content = json.dumps(_rerank("mail bo.x@example.com")).encode()
    assert f.request.raw_content is not None and f.request.raw_content[:2] == b"\x1f\x8b"
    guard.request(f)
    assert f.response is None
    assert b"[REDACTED:email:" in gzip.decompress(f.request.raw_content or b"")


def test_undecodable_request_is_refused(guard: LeakGuard) -> None:
    f = _flow(b"")
    f.request.headers["content-encoding"] = "gzip"
    f.request.raw_content = b"not gzip at all"
    guard.request(f)
    assert f.response is not None and meta.state_of(f).error == "body_not_decodable"


def test_oversize_request_gets_413_before_the_body(guard: LeakGuard) -> None:
    f = _flow(b"")
    f.request.headers["content-length"] = str(10**9)
    guard.requestheaders(f)
    assert f.response is not None and f.response.status_code == 413
    f2 = _flow(_rerank("x" * 70_000))
    guard.request(f2)
    assert f2.response is not None and f2.response.status_code == 413


def test_secret_in_header_or_query_blocks_but_credential_headers_are_left_alone(guard: LeakGuard) -> None:
    tok = _token(1)
    f = _flow(_rerank("a"), headers={"X-Debug": f"token {tok}"})
    guard.request(f)
    assert f.response is not None and meta.state_of(f).findings[0].location == "request.header:x-debug"
    f = _flow(_rerank("a"))
    f.request.path = f"/v2/rerank?api_key={tok}"
    guard.request(f)
    assert f.response is not None and meta.state_of(f).findings[0].location == "request.path"
    jwt = corpus._jwt(random.Random(2))
    f = _flow(_rerank("a"), headers={"Authorization": f"Bearer {jwt}"})
    guard.request(f)
    assert f.response is None and not meta.state_of(f).findings


def test_response_masks_secrets_pii_and_the_injected_credential(guard: LeakGuard) -> None:
    injected = "upstream-" + secrets.token_hex(8)
    f = _flow(_rerank("a"))
    meta.state_of(f).injected_secret = injected
    guard.request(f)
    results = [{"index": 0, "relevance_score": 0.9, "document": {"text": f"key {_token(3)} for {injected}"}},
               {"index": 1, "relevance_score": 0.1, "document": {"text": "call +44 20 7946 0958"}}]
    f.response = http.Response.make(200, json.dumps({"results": results}), {"content-type": "application/json"})
    guard.response(f)
    out = json.loads(f.response.content or b"")
    assert [r["index"] for r in out["results"]] == [0, 1]
    text0, text1 = out["results"][0]["document"]["text"], out["results"][1]["document"]["text"]
    assert "[REDACTED:github_pat:" in text0 and "[REDACTED:injected_credential:" in text0 and injected not in text0
    assert text1.startswith("call [REDACTED:phone:")
    assert {x.type for x in meta.state_of(f).findings} == {"github_pat", "injected_credential", "phone"}
    assert meta.state_of(f).injected_secret is None  # dropped once the response is masked


@pytest.mark.parametrize("name", ["Date", "Last-Modified", "Expires"])
def test_an_exact_http_date_is_not_scanned_but_anything_else_in_a_date_header_is(
    guard: LeakGuard, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    date = "Mon, 23 Nov 2026 17:53:35 GMT"  # its digits are a phone candidate
    seen: list[bytes] = []
    may_find = guard.scanner.may_find

    def spy(values: list[bytes], **kw: Any) -> bool:
        seen.extend(values)
        return may_find(values, **kw)

    monkeypatch.setattr(guard.scanner, "may_find", spy)
    f = _flow(_rerank("a"))
    guard.request(f)
    f.response = http.Response.make(200, b"{}", {"content-type": "application/json", name: date, "Server": "up/1"})
    seen.clear()
    guard.response(f)
    assert seen == [b"Server", b"up/1"] and f.response.headers[name] == date  # names are scanned too
    assert not meta.state_of(f).findings

    # The same header with more than a date is scanned and masked like any other.
    for value in (f"{date} call +44 20 7946 0958", f"call +44 20 7946 0958, {date}", date.replace("GMT", "UTC")):
        f = _flow(_rerank("a"))
        guard.request(f)
        f.response = http.Response.make(200, b"{}", {"content-type": "application/json", name: value})
        seen.clear()
        guard.response(f)
        assert seen == [name.encode(), value.encode()]
        if "+44" in value:
            assert "[REDACTED:phone:" in f.response.headers[name]
            assert [x.location for x in meta.state_of(f).findings] == [f"response.header:{name.lower()}"]


def test_streamed_response_is_masked_across_chunks(guard: LeakGuard) -> None:
    tok = _token(4)
    f = _flow(_rerank("a"))
    f.response = http.Response.make(200, b"", {"content-type": "text/event-stream"})
    del f.response.headers["content-length"]
    guard.responseheaders(f)
    assert callable(f.response.stream) and meta.state_of(f).stream is not None
    data = b"data: " + b"word " * 300 + f"{tok} and ana@example.org\n\n".encode() + b"data: end\n\n"
    cut = data.index(tok.encode()) + 10
    out = b"".join(f.response.stream(data[:cut]) + f.response.stream(data[cut:]) + f.response.stream(b""))
    assert tok.encode() not in out and b"[REDACTED:github_pat:" in out and b"[REDACTED:email:" in out
    guard.response(f)
    assert [x.type for x in meta.state_of(f).findings] == ["github_pat", "email"]
    assert f.response.content == out  # the record sees what was sent, masked


def test_stream_cut_short_leaves_only_plain_metadata(guard: LeakGuard) -> None:
    f = _flow(_rerank("a"))
    meta.state_of(f).injected_secret = "x" * 24
    f.response = http.Response.make(200, b"", {"content-type": "text/event-stream"})
    del f.response.headers["content-length"]
    guard.responseheaders(f)
    assert meta.state_of(f).stream is not None
    guard.error(f)  # the upstream went away mid-stream: no `response` hook follows
    assert meta.state_of(f).stream is None and meta.state_of(f).injected_secret is None


def test_streamed_gzip_response_is_decoded(guard: LeakGuard) -> None:
    tok = _token(5)
    f = _flow(_rerank("a"))
    f.response = http.Response.make(200, b"", {"content-type": "application/json", "content-encoding": "gzip"})
    del f.response.headers["content-length"]
    f.response.headers["transfer-encoding"] = "chunked"
    guard.responseheaders(f)
    assert "content-encoding" not in f.response.headers
    packed = gzip.compress(json.dumps({"text": f"leak {tok}"}).encode())
    assert callable(f.response.stream)
    chunks = [c for i in range(0, len(packed), 7) for c in f.response.stream(packed[i : i + 7])]
    out = b"".join(chunks + f.response.stream(b""))
    assert json.loads(out)["text"].startswith("leak [REDACTED:github_pat:")


def test_oversize_or_undecodable_response_is_refused(guard: LeakGuard) -> None:
    f = _flow(_rerank("a"))
    f.response = http.Response.make(200, b"x" * 70_000, {"content-type": "text/plain"})
    guard.response(f)
    assert (f.response.status_code, meta.state_of(f).error) == (502, "upstream_response_too_large")
    f = _flow(_rerank("a"))
    f.response = http.Response.make(200, b"", {"content-encoding": "gzip"})
    f.response.raw_content = b"garbage"
    guard.response(f)
    assert f.response.status_code == 502


def test_refused_flows_are_masked_for_their_record_only(guard: LeakGuard) -> None:
    """A flow an earlier addon refused goes nowhere; its body and target are masked for the record,
    and nothing about its answer changes."""
    token = _token(6)
    f = _flow(_rerank(token))
    f.request.path = "/v2/rerank#q=" + token
    meta.state_of(f).error = "invalid_token"
    guard.request(f)
    assert f.response is None and meta.state_of(f).error == "invalid_token"
    assert token.encode() not in (f.request.content or b"") and token not in f.request.path
    assert meta.state_of(f).inspected == ["request"]
    assert {r.location for r in meta.state_of(f).findings} == {"request.body", "request.path"}


def test_refused_flow_with_an_unreadable_body_is_not_marked_inspected(guard: LeakGuard) -> None:
    f = _flow(_rerank(_token(6)))
    f.request.content = json.dumps({"query": "x"}).encode("utf-16")
    meta.state_of(f).error = "invalid_token"
    guard.request(f)
    assert not meta.state_of(f).inspected


def test_buffered_response_without_length_is_not_streamed(guard: LeakGuard) -> None:
    f = _flow(_rerank("a"))
    f.response = http.Response.make(200, b"", {"content-type": "application/json"})
    del f.response.headers["content-length"]
    guard.responseheaders(f)
    assert not f.response.stream and meta.state_of(f).stream is None


# -- decompression bombs from the upstream ------------------------------------------------------


def test_buffered_response_bomb_is_sized_not_decoded(guard: LeakGuard) -> None:
    f = _flow(_rerank("a"))
    f.response = http.Response.make(200, b"", {"content-type": "application/json", "content-encoding": "gzip"})
    f.response.raw_content = bomb("gzip", 64 * 1024 * 1024)
    _, peak = traced_peak(lambda: guard.response(f))
    assert peak < 8 * 1024 * 1024  # pieces, not the 64 MB it decodes to
    assert (f.response.status_code, meta.state_of(f).error) == (502, "upstream_response_too_large")
    assert json.loads(f.response.content or b"")["code"] == "upstream_response_too_large"


def test_buffered_response_just_under_the_limit_is_masked(guard: LeakGuard) -> None:
    tok = _token(8)
    body = json.dumps({"text": f"leak {tok}", "pad": "x" * (60 * 1024)}).encode()
    f = _flow(_rerank("a"))
    f.response = http.Response.make(200, b"", {"content-type": "application/json", "content-encoding": "gzip"})
    f.response.raw_content = gzip.compress(body)
    guard.response(f)
    assert f.response.status_code == 200 and meta.state_of(f).error is None
    assert tok not in (f.response.text or "")


def _streamed(guard: LeakGuard, encoding: str) -> http.HTTPFlow:
    f = _flow(_rerank("a"))
    f.response = http.Response.make(200, b"", {"content-type": "text/event-stream", "content-encoding": encoding})
    del f.response.headers["content-length"]
    guard.responseheaders(f)
    assert callable(f.response.stream)
    return f


def test_streamed_bomb_is_cut_at_the_limit_and_the_upstream_closed(
    guard: LeakGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[str] = []
    monkeypatch.setattr(response_masking, "close_upstream", lambda flow: closed.append(flow.id) or True)
    f = _streamed(guard, "gzip")
    packed = bomb("gzip", 64 * 1024 * 1024)
    stream = f.response.stream
    assert callable(stream)
    sent, peak = traced_peak(
        lambda: sum(len(c) for i in range(0, len(packed), 16 * 1024) for c in stream(packed[i : i + 16 * 1024]))
    )
    assert sent <= 64 * 1024  # at most the limit went out before the cut
    assert peak < 8 * 1024 * 1024
    assert closed == [f.id] and meta.state_of(f).error == "upstream_response_too_large"
    assert stream(b"") == []  # nothing more after the cut, not even the held-back window
    # The upstream close ends the flow with an error: recorded as failed (no upstream status).
    f.error = tflow.terr()
    guard.error(f)
    assert f.response is None and meta.state_of(f).stream is None


def test_streamed_bomb_that_ends_before_the_close_is_replaced_and_killed(
    guard: LeakGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(response_masking, "close_upstream", lambda flow: True)
    f = _streamed(guard, "br")
    stream = f.response.stream
    assert callable(stream)
    stream(brotli.compress(b"\0" * (200 * 1024)))
    stream(b"")
    guard.response(f)
    assert (f.response.status_code, meta.state_of(f).error) == (502, "upstream_response_too_large")
    assert f.error is not None and f.error.msg == f.error.KILLED_MESSAGE  # the client never sees it complete


def test_streamed_garbage_is_cut_as_undecodable(guard: LeakGuard, monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[str] = []
    monkeypatch.setattr(response_masking, "close_upstream", lambda flow: closed.append(flow.id) or True)
    f = _streamed(guard, "gzip")
    stream = f.response.stream
    assert callable(stream)
    assert stream(b"this is not gzip") == []
    assert closed == [f.id] and meta.state_of(f).error == "upstream_response_invalid"


def test_streamed_identity_is_not_bounded(guard: LeakGuard) -> None:
    f = _streamed(guard, "identity")
    stream = f.response.stream
    assert callable(stream)
    out = b"".join(c for _ in range(3) for c in stream(b"y" * 64 * 1024)) + b"".join(stream(b""))
    assert len(out) == 3 * 64 * 1024 and meta.state_of(f).error is None


@pytest.mark.parametrize("side", ["request", "response"])
def test_a_header_whose_name_holds_a_secret_is_removed_and_is_a_finding(guard: LeakGuard, side: str) -> None:
    """A name cannot be masked: the header goes, the finding is recorded without the name (issue 16)."""
    name = "AKIA" + "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))
    f = _flow(_rerank("a"))
    if side == "request":
        f.request.headers[name] = "1"
        guard.request(f)
        assert f.response is not None and f.response.status_code == 403  # request secrets are blocked
    else:
        guard.request(f)
        f.response = http.Response.make(200, b"{}", {"content-type": "application/json", name: "1", "Server": "up"})
        guard.response(f)
        assert name not in f.response.headers and f.response.headers["Server"] == "up"
    message = f.request if side == "request" else f.response
    assert name not in message.headers
    where = [x.location for x in meta.state_of(f).findings]
    assert where == [f"{side}.header-name"] and name not in repr(meta.state_of(f).findings)


def test_phone_regions_option_chooses_where_numbers_without_plus_are_read(tmp_path: Path) -> None:
    """`jitgate_pii_phone_regions` (issue 23): a Japanese number is PII by default, not with US only."""
    import phonenumbers
    from mitmproxy import exceptions

    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    example = phonenumbers.example_number_for_type("JP", phonenumbers.PhoneNumberType.MOBILE)
    assert example is not None
    national = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.NATIONAL)
    g = LeakGuard()
    with taddons.context(g) as tctx:
        tctx.configure(g, jitgate_policy=str(policy), jitgate_inspect_engine="re")
        f = _flow(_rerank(f"call {national} today"))
        g.request(f)
        assert national not in json.loads(f.request.content or b"")["documents"][0]
        tctx.configure(g, jitgate_pii_phone_regions="us, ca")
        f = _flow(_rerank(f"call {national} today"))
        g.request(f)
        assert json.loads(f.request.content or b"")["documents"][0] == f"call {national} today"
        with pytest.raises(exceptions.OptionsError, match="jitgate_pii_phone_regions: unknown phone regions: XX"):
            tctx.configure(g, jitgate_pii_phone_regions="US,XX")
