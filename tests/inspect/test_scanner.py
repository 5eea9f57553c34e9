"""Scanner behaviour beyond single rules: every occurrence, tags, decoded content, literals, decisions."""

from __future__ import annotations

import base64
import json
import random
from urllib.parse import quote

import pytest

from jitgate import leaks
from jitgate.inspect import Scanner, actions
from jitgate.inspect.masking import MARKER
from jitgate.policy import MaskProfile
from tests.inspect import corpus


def _token(seed: int = 0) -> str:
    return corpus.PREFIXED["github_pat"](random.Random(seed))


def test_every_occurrence_masked_with_the_same_tag(scanner: Scanner) -> None:
    tok = _token()
    raw = f"{tok} and again {tok}; other {_token(1)}".encode()
    result = scanner.scan(raw)
    assert len(result.findings) == 3
    assert result.findings[0].tag == result.findings[1].tag != result.findings[2].tag
    masked = result.masked(raw)
    assert len(MARKER.findall(masked)) == 3 and b"ghp_" not in masked


def test_tag_depends_on_the_gateway_key() -> None:
    raw = _token().encode()
    a = Scanner(b"a" * 32, engine="re").scan(raw).findings[0].tag
    b = Scanner(b"b" * 32, engine="re").scan(raw).findings[0].tag
    assert a != b and len(a) == 10


def test_unicode_escaped_secret_in_json_found_and_reencoded(scanner: Scanner) -> None:
    tok = _token()
    escaped = "".join(f"\\u{ord(c):04x}" for c in tok[:6]) + tok[6:]
    raw = ('{"documents": ["caf\\u00e9 ' + escaped + ' end", "plain"]}').encode()
    result = scanner.scan(raw, json_strings=True)
    assert [f.type for f in result.findings] == ["github_pat"]
    assert result.findings[0].encoding == "json-escape"
    out = json.loads(result.masked(raw))
    assert out["documents"][0].startswith("café [REDACTED:github_pat:") and out["documents"][1] == "plain"


def test_base64_blob_with_a_secret_is_masked_whole(scanner: Scanner) -> None:
    inner = f"config:\n  token: {_token()}\n  note: {'x y ' * 20}".encode()
    blob = base64.b64encode(inner).decode()
    raw = json.dumps({"documents": [f"attachment {blob} done"]}).encode()
    result = scanner.scan(raw, json_strings=True)
    assert [(f.type, f.encoding) for f in result.findings] == [("github_pat", "base64")]
    out = json.loads(result.masked(raw))["documents"][0]
    assert out.startswith("attachment [REDACTED:github_pat:") and out.endswith(" done")


def test_url_encoded_secret_found(scanner: Scanner) -> None:
    pw = "Xy9#" + corpus._password(random.Random(4))
    raw = f"callback=https://h.example/cb?next={quote('password=' + pw)}&x=1".encode()
    result = scanner.scan(raw)
    assert [(f.type, f.encoding) for f in result.findings] == [("generic_secret", "url")]
    assert quote(pw).encode() not in result.masked(raw)


def test_injected_credential_found_whatever_its_format(scanner: Scanner) -> None:
    cred = "plain-words-no-format-" + str(random.Random(9).getrandbits(64))
    raw = json.dumps({"query": f"why does {cred} fail", "documents": []}).encode()
    assert scanner.scan(raw).findings == []
    result = scanner.scan(raw, literals=[cred.encode()])
    assert [f.type for f in result.findings] == ["injected_credential"]
    assert cred.encode() not in result.masked(raw)


def test_block_decision_lists_types_and_locations(scanner: Scanner) -> None:
    tok = _token()
    raw = json.dumps({"query": "q", "documents": ["fine", f"leak {tok}"]}).encode()
    result = scanner.contains_secret(raw)
    (f,) = result.secrets
    (rec,) = leaks.finding_records(actions.plan(MaskProfile(), "request"), "request.body", [f], raw)
    assert (rec.type, rec.action, rec.offset) == ("github_pat", "block", raw.index(tok.encode()))
    assert tok not in json.dumps(rec.plain()) and tok not in rec.model_dump_json() and tok not in repr(rec)


@pytest.mark.parametrize(
    ("profile", "direction", "secret", "pii"),
    [
        (MaskProfile(), "request", "block", "mask"),
        (MaskProfile(request_pii="block"), "request", "block", "block"),
        (MaskProfile(request_secrets="mask"), "request", "mask", "mask"),
        (MaskProfile(request_secrets="review"), "request", "review", "mask"),
        (MaskProfile(request_pii="review"), "request", "block", "review"),
        (MaskProfile(), "response", "mask", "mask"),
        (MaskProfile(response_pii="allow"), "response", "mask", "allow"),
    ],
)
def test_actions_per_profile(profile: MaskProfile, direction: actions.Direction, secret: str, pii: str) -> None:
    p = actions.plan(profile, direction)
    assert (p.secrets, p.pii) == (secret, pii)
    # allowed PII is still looked for: its findings keep the body out of the record (issue 19)
    assert p.pii_types == frozenset(profile.pii_types)


def test_auto_falls_back_to_re_without_hyperscan(monkeypatch: pytest.MonkeyPatch) -> None:
    from jitgate.inspect import engine
    from jitgate.inspect.rules import SECRET_RULES

    monkeypatch.setattr(engine, "HAVE_HYPERSCAN", False)
    assert engine.make_engine(SECRET_RULES, "auto").name == "re"
    monkeypatch.setattr(engine, "HAVE_HYPERSCAN", True)
    assert engine.make_engine(SECRET_RULES, "auto").name == "hyperscan"


def test_engines_agree_on_a_large_body(hs_scanner: Scanner, re_scanner: Scanner) -> None:
    from jitgate.inspect import PII_TYPES

    body = corpus.rerank_body(77, target_bytes=300_000, secret_rate=0.2, pii_rate=0.3)
    raw = body.encode()
    a = hs_scanner.scan(raw, pii=PII_TYPES, json_strings=True)
    b = re_scanner.scan(raw, pii=PII_TYPES, json_strings=True)
    assert len(a.findings) >= len(body.planted) > 50
    assert a.findings == b.findings and a.masked(raw) == b.masked(raw)


@pytest.mark.parametrize("key_len", [16, 32, 64, 65, 200])
def test_tagger_is_hmac_sha256(key_len: int) -> None:
    import hashlib
    import hmac
    import secrets

    from jitgate.inspect.masking import TAG_CHARS, Tagger

    key = secrets.token_bytes(key_len)
    for value in (b"", b"x", secrets.token_bytes(100)):
        assert Tagger(key)(value) == hmac.new(key, value, hashlib.sha256).hexdigest()[:TAG_CHARS]


def test_pii_in_a_bare_json_number_is_masked_as_a_quoted_marker(scanner: Scanner) -> None:
    raw = b'{"card": 4111111111111111, "score": 0.5, "n": [1, 4111111111111111.0]}'
    out = json.loads(scanner.scan(raw, pii=("card",), json_strings=True).masked(raw))
    assert out["card"].startswith("[REDACTED:card:") and out["score"] == 0.5
    assert out["n"][0] == 1 and out["n"][1].startswith("[REDACTED:card:")


def test_a_number_under_a_secret_keyword_is_no_generic_secret(scanner: Scanner) -> None:
    raw = b'{"credential": 11547274426668.0, "password": -2.5e-07}'
    result = scanner.scan(raw, json_strings=True)
    assert result.findings == [] and json.loads(result.masked(raw)) == json.loads(raw)
