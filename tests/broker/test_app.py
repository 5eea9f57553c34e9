"""The broker handler with API Gateway v2 events, moto's mock_aws and a real OIDC issuer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from broker import deps
from broker.app import handler
from jitgate.devstack.aws import Stack
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import ADMIN_GROUP, CI_CLAIMS, MAINTAINER_SUB, READER_SUB
from jitgate.events import TokenEvent
from jitgate.state import REVOCATION_PK, TOKEN_PK, fetch_revocations, revoked_among
from jitgate.token import MAX_LEEWAY, KeySet, verify_token
from tests.broker.conftest import BROKER_URL, Clock, FakeLambdaContext, Invoke, b64_body, load_event

CI_SUB = "repo:acme/search-ranker:ref:refs/heads/main"


def _ci(issuer: OidcIssuer, clock: Clock, **claims: Any) -> str:
    return issuer.mint(CI_SUB, {**CI_CLAIMS, **claims}, now=clock.now)


def _events(stack: Stack) -> list[TokenEvent]:
    s3 = boto3.client("s3", region_name=stack.region)
    out = []
    for obj in s3.list_objects_v2(Bucket=stack.bucket, Prefix="token-events/").get("Contents", []):
        assert obj["Key"].startswith("token-events/dt=2027-01-15/")  # NOW's date, Hive-partitioned
        body = s3.get_object(Bucket=stack.bucket, Key=obj["Key"])["Body"].read().decode()
        out += [TokenEvent.model_validate_json(line) for line in body.splitlines()]
    return out


def _keyset(invoke: Invoke) -> KeySet:
    status, jwks, headers = invoke(load_event("jwks"))
    assert status == 200 and "max-age" in headers["cache-control"]
    return KeySet.from_jwks(jwks)


def test_jwks_publishes_every_configured_key(invoke: Invoke, stack: Stack) -> None:
    keys = _keyset(invoke)
    assert keys.kids() == frozenset(stack.key_ids) and len(stack.key_ids) == 2


def test_mint_signs_with_the_first_key_and_verifies(
    invoke: Invoke, issuer: OidcIssuer, stack: Stack, clock: Clock
) -> None:
    status, body, headers = invoke(load_event("mint", token=_ci(issuer, clock)))
    assert status == 201, body
    assert headers["cache-control"] == "no-store"
    claims = verify_token(body["token"], _keyset(invoke), now=clock.now, issuer=BROKER_URL)
    assert json.loads(json.dumps(claims.model_dump()))["iss"] == BROKER_URL
    assert (claims.iat, claims.exp, body["expires_at"]) == (int(clock.now), int(clock.now) + 600, claims.exp)
    assert claims.scope.operations == ("rerank",) and claims.mask == "default" and claims.job == "nightly-rerank"
    assert claims.limits.max_documents == 1000
    assert body["proxy_hint"].startswith("HTTPS_PROXY=http://jit:") and body["key_env"] == "CO_API_KEY"
    # The token's kid is the first configured KMS key.
    header = json.loads(__import__("base64").urlsafe_b64decode(body["token"].split(".")[0] + "=="))
    assert header == {"alg": "ES256", "typ": "JWT", "kid": stack.key_ids[0]}
    (event,) = _events(stack)
    assert (event.event_type, event.jti, event.sub, event.grant_name, event.status) == (
        "issued", claims.jti, CI_SUB, "rerank-ci", 201
    )
    assert event.purpose == "rerank candidates" and event.source_ip == "198.51.100.7"
    assert body["token"] not in event.line()


@pytest.mark.parametrize(("connection", "names_upstream"), [("tei-test", True), ("cohere-test", False)])
def test_a_self_hosted_connections_answer_names_its_upstream(
    invoke: Invoke, issuer: OidcIssuer, clock: Clock, connection: str, names_upstream: bool
) -> None:
    """TEI (like Chroma) has no public vendor name: the job's client is pointed at the upstream, and
    `jitgate run` must know it so NO_PROXY never sends a loopback upstream around the gateway."""
    status, body, _ = invoke(load_event("mint", token=_ci(issuer, clock), body={"connection": connection}))
    assert status == 201, body
    assert ("upstream" in body) is names_upstream and body["dialect"] == connection.split("-")[0]
    if names_upstream:
        assert body["upstream"].startswith("https://") and body["key_envs"] == []


@pytest.mark.parametrize(
    ("ttl", "expected", "clamped"),
    [("10m", 600, False), (60, 60, False), ("30m", 1800, False), ("2h", 1800, True), ("1d", 1800, True)],
)
def test_ttl_is_clamped_to_the_grant(
    invoke: Invoke, issuer: OidcIssuer, clock: Clock, ttl: Any, expected: int, clamped: bool
) -> None:
    event = load_event("mint", token=_ci(issuer, clock), body={"connection": "cohere-test", "ttl": ttl})
    status, body, _ = invoke(event)
    assert status == 201
    assert (body["ttl"], body["clamped"], body["expires_at"]) == (expected, clamped, int(clock.now) + expected)


def test_default_ttl_from_the_environment_when_the_grant_has_none(
    invoke: Invoke, issuer: OidcIssuer, clock: Clock, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    monkeypatch.setenv("JITGATE_DEFAULT_TTL", "5m")
    deps.use(deps.Services.build(deps.Settings.from_env(os.environ), clock=clock))
    oidc = issuer.mint(READER_SUB, now=clock.now)
    status, body, _ = invoke(load_event("mint", token=oidc, body={"connection": "store-test"}))
    assert (status, body["ttl"]) == (201, 300)


def test_base64_body_is_decoded(invoke: Invoke, issuer: OidcIssuer, clock: Clock) -> None:
    status, body, _ = invoke(b64_body(load_event("mint", token=_ci(issuer, clock))))
    assert status == 201, body


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("{not json", 400, "bad_request"),
        ("[1, 2]", 400, "bad_request"),
        ({}, 400, "bad_request"),
        ({"connection": 7}, 400, "bad_request"),
        ({"connection": "cohere-test", "ttl": -5}, 400, "bad_request"),
        ({"connection": "cohere-test", "ttl": "soon"}, 400, "bad_request"),
        ({"connection": "cohere-test", "operations": []}, 400, "bad_request"),
        ({"connection": "cohere-test", "operations": ["embed"]}, 400, "bad_request"),
        ({"connection": "cohere-test", "token": "x"}, 400, "bad_request"),
        ({"connection": "nope"}, 404, "unknown_connection"),
        ({"connection": "store-test"}, 403, "not_granted"),
    ],
)
def test_refusals(
    invoke: Invoke, issuer: OidcIssuer, stack: Stack, clock: Clock, body: Any, status: int, code: str
) -> None:
    got_status, got, _ = invoke(load_event("mint", token=_ci(issuer, clock), body=body))
    assert (got_status, got["code"]) == (status, code)
    assert set(got) == {"code", "message"}
    (event,) = _events(stack)
    assert (event.event_type, event.code, event.status, event.sub) == ("denied", code, status, CI_SUB)
    assert event.route == "POST /v1/tokens"


def test_identity_not_matching_the_grant_claims_is_not_granted(
    invoke: Invoke, issuer: OidcIssuer, clock: Clock
) -> None:
    for claims in ({"ref": "refs/heads/feature"}, {"repository": "evil/search-ranker"}, {"repository": None}):
        status, body, _ = invoke(load_event("mint", token=_ci(issuer, clock, **claims)))
        assert (status, body["code"]) == (403, "not_granted")


def test_grant_needing_approval_answers_202_and_mints_nothing(
    invoke: Invoke, issuer: OidcIssuer, clock: Clock
) -> None:
    oidc = issuer.mint(MAINTAINER_SUB, now=clock.now)
    status, body, _ = invoke(load_event("mint", token=oidc, body={"connection": "store-test"}))
    assert (status, body["state"]) == (202, "pending")
    assert body["approval_id"].startswith("apv-") and "token" not in body


def test_missing_identity_is_401_and_recorded_without_a_subject(invoke: Invoke, stack: Stack) -> None:
    status, body, headers = invoke(load_event("mint"))
    assert (status, body["code"]) == (401, "unauthenticated")
    assert headers["www-authenticate"].startswith("Bearer")
    (event,) = _events(stack)
    assert (event.event_type, event.code, event.sub, event.oidc_issuer) == ("denied", "unauthenticated", None, None)


def test_expired_identity_by_the_injected_clock(invoke: Invoke, issuer: OidcIssuer, clock: Clock) -> None:
    oidc = _ci(issuer, clock)
    clock.now += 300 + 31  # the OIDC token's ttl plus the leeway
    status, body, _ = invoke(load_event("mint", token=oidc))
    assert (status, body["code"]) == (401, "invalid_token")


def test_issuance_fails_closed_when_the_event_cannot_be_written(
    invoke: Invoke, issuer: OidcIssuer, stack: Stack, clock: Clock
) -> None:
    boto3.client("s3", region_name=stack.region).delete_bucket(Bucket=stack.bucket)
    status, body, _ = invoke(load_event("mint", token=_ci(issuer, clock)))
    assert (status, body["code"]) == (503, "audit_unavailable")
    assert "token" not in body


def test_issuance_fails_closed_when_kms_cannot_sign(
    invoke: Invoke, issuer: OidcIssuer, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A key id KMS does not know: the Sign call fails with a client error.
    monkeypatch.setattr(deps.services().signer, "key_id", "6b0c0a57-0000-4000-8000-000000000000")
    status, body, _ = invoke(load_event("mint", token=_ci(issuer, clock)))
    assert (status, body["code"]) == (503, "signing_unavailable")


def test_unexpected_errors_answer_500_without_their_text(
    invoke: Invoke, issuer: OidcIssuer, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(_: Any) -> str:
        raise RuntimeError("internal detail that must not leak")

    monkeypatch.setattr(deps.services().signer, "sign", boom)
    status, body, _ = invoke(load_event("mint", token=_ci(issuer, clock)))
    assert (status, body["code"]) == (500, "internal_error")
    assert "internal detail" not in json.dumps(body)


def test_unknown_route_is_a_json_404(invoke: Invoke) -> None:
    event = load_event("jwks")
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/v1/nothing"
    status, body, _ = invoke(event)
    assert (status, body["code"]) == (404, "not_found")


def test_misconfigured_broker_answers_500(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], lambda_context: FakeLambdaContext
) -> None:
    monkeypatch.delenv("JITGATE_KMS_KEY_IDS")
    deps.use(None)
    result = handler(load_event("jwks"), lambda_context)
    assert (result["statusCode"], json.loads(result["body"])["code"]) == (500, "broker_misconfigured")
    deps.use(None)


# -- revocation --------------------------------------------------------------------------------


def _mint(invoke: Invoke, oidc: str) -> dict[str, Any]:
    status, body, _ = invoke(load_event("mint", token=oidc))
    assert status == 201, body
    return body


def _item(stack: Stack, pk: str, jti: str) -> dict[str, Any] | None:
    ddb = boto3.client("dynamodb", region_name=stack.region)
    item: dict[str, Any] | None = ddb.get_item(TableName=stack.table, Key={"pk": {"S": pk}, "sk": {"S": jti}}).get(
        "Item"
    )
    return item


def test_subject_revokes_idempotently_and_the_item_outlives_the_leeway(
    invoke: Invoke, issuer: OidcIssuer, stack: Stack, clock: Clock
) -> None:
    minted = _mint(invoke, _ci(issuer, clock))
    owner = _item(stack, TOKEN_PK, minted["jti"])
    assert owner is not None and owner["sub"]["S"] == CI_SUB
    status, first, _ = invoke(load_event("revoke", token=_ci(issuer, clock), jti=minted["jti"]))
    assert (status, first["revoked"], first["already_revoked"]) == (200, True, False)
    clock.now += 5
    status, again, _ = invoke(load_event("revoke", token=_ci(issuer, clock), jti=minted["jti"]))
    assert (status, again["already_revoked"], again["revoked_at"]) == (200, True, first["revoked_at"])
    item = _item(stack, REVOCATION_PK, minted["jti"])
    # Kept until no gateway accepts the token any more: exp plus the largest leeway.
    assert item is not None and int(item["expires_at"]["N"]) == minted["expires_at"] + MAX_LEEWAY
    kinds = [e.event_type for e in _events(stack)]
    assert sorted(kinds) == ["issued", "revoked", "revoked"]


def test_only_subject_or_admin_may_revoke(invoke: Invoke, issuer: OidcIssuer, stack: Stack, clock: Clock) -> None:
    minted = _mint(invoke, _ci(issuer, clock))
    stranger = issuer.mint(READER_SUB, now=clock.now)
    status, body, _ = invoke(load_event("revoke", token=stranger, jti=minted["jti"]))
    assert (status, body["code"]) == (403, "not_token_owner")
    assert _item(stack, REVOCATION_PK, minted["jti"]) is None
    (denied,) = [e for e in _events(stack) if e.event_type == "denied"]
    assert (denied.route, denied.jti, denied.actor) == (f"DELETE /v1/tokens/{minted['jti']}", minted["jti"], READER_SUB)
    same_name_other_group = issuer.mint(READER_SUB, {"groups": ["search-leads"]}, now=clock.now)
    assert invoke(load_event("revoke", token=same_name_other_group, jti=minted["jti"]))[0] == 403
    admin = issuer.mint("alice@example.com", {"groups": ["dev", ADMIN_GROUP]}, now=clock.now)
    status, body, _ = invoke(load_event("revoke", token=admin, jti=minted["jti"]))
    assert status == 200
    revoked = _item(stack, REVOCATION_PK, minted["jti"])
    assert revoked is not None and revoked["revoked_by"]["S"] == "alice@example.com"


@pytest.mark.parametrize(("jti", "status", "code"), [("0" * 32, 404, "unknown_token"), ("a.b", 400, "bad_request")])
def test_revoke_unknown_or_malformed(
    invoke: Invoke, issuer: OidcIssuer, clock: Clock, jti: str, status: int, code: str
) -> None:
    got, body, _ = invoke(load_event("revoke", token=_ci(issuer, clock), jti=jti))
    assert (got, body["code"]) == (status, code)


@pytest.mark.parametrize("past_exp", [0, 1, MAX_LEEWAY - 1])
def test_a_token_past_exp_but_inside_the_leeway_can_be_revoked_and_stays_revoked(
    invoke: Invoke, issuer: OidcIssuer, stack: Stack, clock: Clock, past_exp: int
) -> None:
    """A gateway still accepts the token until exp + leeway, so a revoke then must count (issue 17)."""
    ddb = boto3.client("dynamodb", region_name=stack.region)
    minted = _mint(invoke, _ci(issuer, clock))
    clock.now = minted["expires_at"] + past_exp
    status, body, _ = invoke(load_event("revoke", token=_ci(issuer, clock), jti=minted["jti"]))
    assert (status, body["already_revoked"], body["expires_at"]) == (200, False, minted["expires_at"])
    for moment in (clock.now, minted["expires_at"] + MAX_LEEWAY - 0.5):
        assert minted["jti"] in fetch_revocations(ddb, stack.table, now=moment)
        assert revoked_among(ddb, stack.table, {minted["jti"]}, now=moment) == {minted["jti"]}
    gone = minted["expires_at"] + MAX_LEEWAY
    assert minted["jti"] not in fetch_revocations(ddb, stack.table, now=gone)
    assert revoked_among(ddb, stack.table, {minted["jti"]}, now=gone) == set()


def test_revoking_a_token_no_gateway_accepts_any_more_is_unknown(
    invoke: Invoke, issuer: OidcIssuer, clock: Clock
) -> None:
    minted = _mint(invoke, _ci(issuer, clock))
    clock.now = minted["expires_at"] + MAX_LEEWAY
    status, body, _ = invoke(load_event("revoke", token=_ci(issuer, clock), jti=minted["jti"]))
    assert (status, body["code"]) == (404, "unknown_token")


def test_revoke_needs_an_identity(invoke: Invoke) -> None:
    status, body, _ = invoke(load_event("revoke", jti="0" * 32))
    assert (status, body["code"]) == (401, "unauthenticated")


def test_issuer_defaults_to_the_apis_own_url(
    issuer: OidcIssuer, clock: Clock, env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
    lambda_context: FakeLambdaContext,
) -> None:
    """template.yaml leaves JITGATE_ISSUER empty unless IssuerUrl is set: `iss` is the API's URL."""
    import os

    monkeypatch.setenv("JITGATE_ISSUER", "")
    deps.use(deps.Services.build(deps.Settings.from_env(os.environ), clock=clock))
    event = load_event("mint", token=_ci(issuer, clock))
    result = handler(event, lambda_context)
    assert result["statusCode"] == 201, result["body"]
    jwks = json.loads(handler(load_event("jwks"), lambda_context)["body"])
    expected = f"https://{event['requestContext']['domainName']}"
    claims = verify_token(json.loads(result["body"])["token"], KeySet.from_jwks(jwks), now=clock.now, issuer=expected)
    assert claims.iss == "https://abc123.execute-api.us-east-1.amazonaws.com"


def test_policy_can_come_from_s3(
    issuer: OidcIssuer, clock: Clock, stack: Stack, env: dict[str, str], policy_file: Any,
    monkeypatch: pytest.MonkeyPatch, lambda_context: FakeLambdaContext,
) -> None:
    import os

    boto3.client("s3", region_name=stack.region).put_object(
        Bucket=stack.bucket, Key="config/policy.yaml", Body=policy_file.read_bytes()
    )
    monkeypatch.setenv("JITGATE_POLICY", f"s3://{stack.bucket}/config/policy.yaml")
    deps.use(deps.Services.build(deps.Settings.from_env(os.environ), clock=clock))
    assert handler(load_event("mint", token=_ci(issuer, clock)), lambda_context)["statusCode"] == 201

    monkeypatch.setenv("JITGATE_POLICY", f"s3://{stack.bucket}/config/missing.yaml")
    deps.use(None)
    result = handler(load_event("jwks"), lambda_context)
    body = json.loads(result["body"])
    assert (result["statusCode"], body["code"]) == (500, "broker_misconfigured")
    assert "missing.yaml" in body["message"]
    deps.use(None)


def test_the_sam_local_sample_events_are_routed(
    issuer: OidcIssuer, clock: Clock, invoke: Invoke
) -> None:
    """events/*.json (for `sam local invoke`) reach their routes: auth, body and path all parse."""
    samples = Path(__file__).resolve().parents[2] / "events"

    def sample(name: str, **replace: str) -> dict[str, Any]:
        text = (samples / f"{name}.json").read_text()
        for old, new in replace.items():
            text = text.replace(old, new)
        loaded: dict[str, Any] = json.loads(text)
        return loaded

    oidc = _ci(issuer, clock)
    assert invoke(sample("jwks"))[0] == 200
    status, body, _ = invoke(sample("mint", REPLACE_WITH_OIDC_TOKEN=oidc))
    assert (status, body["code"]) == (404, "unknown_connection")  # cohere-prod: the example policy's name
    status, body, _ = invoke(sample("revoke", REPLACE_WITH_OIDC_TOKEN=oidc, REPLACE_WITH_JTI="0" * 32))
    assert (status, body["code"]) == (404, "unknown_token")
    env = json.loads((samples / "env.json").read_text())["BrokerFunction"]
    assert {k for k in env if k.startswith("JITGATE_")} == {
        "JITGATE_POLICY", "JITGATE_ISSUER", "JITGATE_KMS_KEY_IDS", "JITGATE_TABLE", "JITGATE_BUCKET",
        "JITGATE_TOPIC_ARN", "JITGATE_DEFAULT_TTL",
    }
