"""hypothesis drives every broker route through the real handler (API Gateway v2 events, mock_aws,
a real OIDC issuer) with arbitrary JSON: any depth, any types, broken text. The broker answers
2xx or 4xx, never 500; a malformed body is 400 `bad_request` and its denial is a token event."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.deps import Services
from jitgate.devstack.aws import Stack
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import ADMIN_GROUP, APPROVER_GROUP, CI_CLAIMS, MAINTAINER_SUB
from jitgate.events import TokenEvent
from tests.broker.conftest import Clock, Invoke, api_event

CI_SUB = "repo:acme/search-ranker:ref:refs/heads/main"
MAX_DEPTH = 6000  # past Python's recursion limit and past the 16 kB body limit
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=16)
    | st.sampled_from(["cohere-test", "store-test", "rerank", "15m", "0", "-1", "1d", "9" * 40])
)
json_values = st.recursive(
    _scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)


@st.composite
def deep(draw: st.DrawFn) -> str:
    """JSON text nested `depth` levels, as arrays or as objects."""
    depth = draw(st.integers(min_value=1, max_value=MAX_DEPTH))
    if draw(st.booleans()):
        return "[" * depth + "]" * depth
    return '{"k":' * depth + "0" + "}" * depth


# A body shaped like a route's own (the keys the routes read), with any value under each key.
_FIELDS = ("connection", "operations", "ttl", "job", "purpose", "reason")
shaped = st.dictionaries(st.sampled_from([*_FIELDS, "extra"]), json_values, max_size=6)
field_values = st.one_of(json_values.map(json.dumps), deep())


@st.composite
def shaped_text(draw: st.DrawFn) -> str:
    """A route-shaped object whose values may be nested far too deep (written as text, since
    json.dumps itself cannot write them)."""
    keys = draw(st.lists(st.sampled_from(_FIELDS), min_size=1, max_size=4, unique=True))
    return "{" + ",".join(f"{json.dumps(k)}:{draw(field_values)}" for k in keys) + "}"


bodies = st.one_of(
    st.none(),
    json_values.map(json.dumps),
    shaped.map(json.dumps),
    shaped_text(),
    deep(),
    st.text(max_size=64),
)


@st.composite
def malformed(draw: st.DrawFn) -> str:
    """A body POST /v1/tokens must refuse: not JSON, not an object, too deep, or a field of the wrong type."""
    kind = draw(st.sampled_from(["text", "not_object", "deep", "deep_field", "wrong_type", "extra"]))
    if kind == "text":
        return draw(st.text(max_size=64).filter(lambda t: not _parses(t)))
    if kind == "not_object":
        return json.dumps(draw(json_values.filter(lambda v: not isinstance(v, dict))))
    if kind == "deep":
        return draw(deep().filter(lambda t: len(t) > 2000))
    if kind == "deep_field":
        field = draw(st.sampled_from(["connection", "operations", "ttl", "job", "purpose"]))
        depth = draw(st.integers(min_value=1100, max_value=MAX_DEPTH))
        return '{"connection": "cohere-test", ' + json.dumps(field) + ": " + "[" * depth + "]" * depth + "}"
    if kind == "wrong_type":
        field, value = draw(
            st.sampled_from([("ttl", True), ("ttl", False), ("ttl", 1.5), ("ttl", [60]), ("ttl", {"s": 1}),
                             ("connection", True), ("connection", 1), ("operations", "rerank"), ("job", 7),
                             ("purpose", ["a"])])
        )
        return json.dumps({"connection": "cohere-test", field: value})
    return json.dumps({"connection": "cohere-test", draw(st.text(min_size=1, max_size=8).filter(
        lambda k: k not in _FIELDS)): draw(json_values)})


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


class Recorded:
    """The token events the broker wrote during a test (each also went to the mock bucket)."""

    def __init__(self, svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[TokenEvent] = []
        write = svc.events.write

        def spy(event: TokenEvent) -> str:
            key = write(event)
            self.events.append(event)
            return key

        monkeypatch.setattr(svc.events, "write", spy)


@pytest.fixture
def recorded(svc: Services, monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorded]:
    yield Recorded(svc, monkeypatch)


@pytest.fixture
def pending(invoke: Invoke, issuer: OidcIssuer, clock: Clock) -> str:
    """A pending issuance approval (store-maintenance), so the approval routes reach a real item."""
    token = issuer.mint(MAINTAINER_SUB, now=clock.now)
    status, answer, _ = invoke(api_event("POST", "/v1/tokens", token, {"connection": "store-test"}))
    assert status == 202, answer
    return str(answer["approval_id"])


def _identity(issuer: OidcIssuer, clock: Clock, who: str) -> str | None:
    return {
        "ci": lambda: issuer.mint(CI_SUB, CI_CLAIMS, now=clock.now),
        "maintainer": lambda: issuer.mint(MAINTAINER_SUB, now=clock.now),
        "lead": lambda: issuer.mint("lead-dave", {"groups": [APPROVER_GROUP]}, now=clock.now),
        "admin": lambda: issuer.mint("alice@example.com", {"groups": [ADMIN_GROUP]}, now=clock.now),
        "none": lambda: None,
    }[who]()


def _event(method: str, path: str, token: str | None, body: str | None, b64: bool) -> dict[str, Any]:
    event = api_event(method, path, token, body)
    if b64 and body is not None:
        event["body"] = base64.b64encode(body.encode("utf-8", "surrogatepass")).decode()
        event["isBase64Encoded"] = True
    return event


@FUZZ
@given(
    route=st.sampled_from([
        ("POST", "/v1/tokens"), ("DELETE", "/v1/tokens/{jti}"), ("GET", "/v1/approvals"),
        ("GET", "/v1/approvals/{apv}"), ("POST", "/v1/approvals/{apv}/approve"),
        ("POST", "/v1/approvals/{apv}/deny"), ("GET", "/.well-known/jwks.json"),
    ]),
    who=st.sampled_from(["ci", "maintainer", "lead", "admin", "none"]),
    body=bodies,
    b64=st.booleans(),
    jti=st.one_of(st.just("0" * 32), st.text(min_size=1, max_size=40).filter(lambda t: "/" not in t)),
)
def test_every_route_answers_arbitrary_json_with_2xx_or_4xx(
    invoke: Invoke, issuer: OidcIssuer, clock: Clock, pending: str, recorded: Recorded,
    route: tuple[str, str], who: str, body: str | None, b64: bool, jti: str,
) -> None:
    method, template = route
    path = template.replace("{jti}", jti).replace("{apv}", pending)
    status, answer, _ = invoke(_event(method, path, _identity(issuer, clock, who), body, b64))
    assert 200 <= status < 500, (status, answer)
    if status >= 400:
        assert set(answer) == {"code", "message"} and answer["code"] != "internal_error"


@FUZZ
@given(body=malformed(), b64=st.booleans())
def test_a_malformed_mint_body_is_400_and_its_denial_is_recorded(
    invoke: Invoke, issuer: OidcIssuer, clock: Clock, recorded: Recorded, body: str, b64: bool
) -> None:
    before = len(recorded.events)
    status, answer, _ = invoke(_event("POST", "/v1/tokens", _identity(issuer, clock, "ci"), body, b64))
    assert (status, answer["code"]) == (400, "bad_request"), answer
    (denial,) = recorded.events[before:]
    assert (denial.event_type, denial.status, denial.code, denial.sub) == ("denied", 400, "bad_request", CI_SUB)
    assert denial.jti is None and denial.route == "POST /v1/tokens"


@FUZZ
@given(
    body=st.one_of(malformed(), st.just('{"reason": 5}'), st.just("{}")),
    verdict=st.sampled_from(["approve", "deny"]),
)
def test_a_malformed_decision_body_is_400_and_its_denial_is_recorded(
    invoke: Invoke, issuer: OidcIssuer, clock: Clock, pending: str, recorded: Recorded, body: str, verdict: str
) -> None:
    before = len(recorded.events)
    lead = _identity(issuer, clock, "lead")
    status, answer, _ = invoke(_event("POST", f"/v1/approvals/{pending}/{verdict}", lead, body, False))
    assert (status, answer["code"]) == (400, "bad_request"), answer
    (denial,) = recorded.events[before:]
    assert (denial.event_type, denial.code, denial.actor, denial.apv) == ("denied", "bad_request", "lead-dave", pending)


def test_the_recorded_denials_are_in_the_bucket(
    invoke: Invoke, issuer: OidcIssuer, clock: Clock, recorded: Recorded, stack: Stack
) -> None:
    """The spy above only watches: each event it saw was written to S3 by the real sink."""
    deep_body = "[" * 3000 + "]" * 3000
    status, answer, _ = invoke(_event("POST", "/v1/tokens", _identity(issuer, clock, "ci"), deep_body, False))
    assert (status, answer["code"]) == (400, "bad_request")
    s3 = boto3.client("s3", region_name=stack.region)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=stack.bucket, Prefix="token-events/").get("Contents", [])]
    (event,) = recorded.events
    assert len(keys) == 1 and event.event_id in keys[0]
