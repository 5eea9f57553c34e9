"""The broker's settings and clients, built once per Lambda container from the environment.

Environment (declared in template.yaml): JITGATE_POLICY (a path, or s3://bucket/key; empty:
the bundled broker/policy.yaml), JITGATE_ISSUER, JITGATE_KMS_KEY_IDS
(first one signs, all are published), JITGATE_TABLE, JITGATE_BUCKET, JITGATE_TOPIC_ARN,
JITGATE_DEFAULT_TTL. boto3 honours AWS_ENDPOINT_URL, so a moto server stands in locally.
Routes call `services()`; tests install their own with `use()`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from broker.approvals import Approvals
from broker.audit import EventSink
from broker.issuance import Issuance
from broker.oidc import OidcVerifier
from broker.revocation import TokenStore
from broker.signer import KmsJwks, KmsSigner
from jitgate.approval_store import ApprovalStore
from jitgate.durations import parse_duration
from jitgate.errors import BrokerMisconfigured
from jitgate.policy import DEFAULT_TTL, Policy, load_policy, parse_policy

BUNDLED_POLICY = Path(__file__).resolve().parent / "policy.yaml"
_CLIENT_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"})


@dataclass(frozen=True)
class Settings:
    policy_path: str
    issuer: str  # "" means: this API's own URL (see `issuer_url`)
    kms_key_ids: tuple[str, ...]
    table: str
    bucket: str
    topic_arn: str | None
    default_ttl: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        def need(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise BrokerMisconfigured(f"the broker is misconfigured: {name} is not set")
            return value

        key_ids = tuple(k.strip() for k in need("JITGATE_KMS_KEY_IDS").split(",") if k.strip())
        try:
            default_ttl = parse_duration(env.get("JITGATE_DEFAULT_TTL") or DEFAULT_TTL)
        except ValueError:
            raise BrokerMisconfigured("the broker is misconfigured: JITGATE_DEFAULT_TTL is not a duration") from None
        return cls(
            policy_path=env.get("JITGATE_POLICY") or str(BUNDLED_POLICY),
            issuer=env.get("JITGATE_ISSUER", "").strip().rstrip("/"),
            kms_key_ids=key_ids,
            table=need("JITGATE_TABLE"),
            bucket=need("JITGATE_BUCKET"),
            topic_arn=env.get("JITGATE_TOPIC_ARN") or None,
            default_ttl=default_ttl,
        )


@dataclass(frozen=True)
class Services:
    """Everything a route uses, built once per container; each AWS client is made once and shared."""

    settings: Settings
    policy: Policy
    verifier: OidcVerifier
    signer: KmsSigner
    jwks: KmsJwks
    tokens: TokenStore
    events: EventSink
    issuance: Issuance
    approvals: Approvals
    clock: Callable[[], float] = time.time

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        client: Callable[[str], Any] | None = None,
    ) -> Services:
        make = client or (lambda name: boto3.client(name, config=_CLIENT_CONFIG))  # type: ignore[call-overload]
        kms, s3, dynamodb = make("kms"), make("s3"), make("dynamodb")
        policy = read_policy(settings.policy_path, s3=s3)
        signer = KmsSigner(kms, settings.kms_key_ids[0])
        tokens = TokenStore(dynamodb, settings.table)
        events = EventSink(s3, settings.bucket)
        issuance = Issuance(policy, settings.default_ttl, signer=signer, tokens=tokens, events=events)
        return cls(
            settings=settings,
            policy=policy,
            verifier=OidcVerifier(policy.issuers),
            signer=signer,
            jwks=KmsJwks(kms, settings.kms_key_ids),
            tokens=tokens,
            events=events,
            issuance=issuance,
            approvals=Approvals(
                store=ApprovalStore(dynamodb, settings.table),
                sns=make("sns"),
                topic_arn=settings.topic_arn,
                events=events,
                issuance=issuance,
            ),
            clock=clock,
        )


def read_policy(location: str, *, s3: Any) -> Policy:
    """The policy from a file path or an `s3://bucket/key` URI (read once per container)."""
    if not location.startswith("s3://"):
        return load_policy(location)
    bucket, _, key = location.removeprefix("s3://").partition("/")
    if not bucket or not key:
        raise BrokerMisconfigured("the broker is misconfigured: JITGATE_POLICY is not s3://bucket/key")
    try:
        text = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
    except (ClientError, BotoCoreError, UnicodeDecodeError):
        raise BrokerMisconfigured(f"the broker cannot read its policy at {location}") from None
    return parse_policy(text, source=location)


def issuer_url(settings: Settings, event: APIGatewayProxyEventV2) -> str:
    """JITGATE_ISSUER, else this API's URL from API Gateway's request context.

    The template cannot pass the API's URL to its own function (a dependency cycle), so an
    empty JITGATE_ISSUER means `https://<domainName>`: API Gateway sets that field, not the
    client's Host header. Behind a custom domain, set IssuerUrl so every token names one issuer.
    """
    if settings.issuer:
        return settings.issuer
    domain = event.request_context.domain_name
    if not domain:
        raise BrokerMisconfigured("the broker is misconfigured: JITGATE_ISSUER is not set")
    return f"https://{domain}"


_current: Services | None = None


def services() -> Services:
    """The container's services, built from the environment on first use."""
    global _current
    if _current is None:
        _current = Services.build(Settings.from_env(os.environ))
    return _current


def use(new: Services | None) -> None:
    """Install `new` (or forget the current one, to rebuild from the environment)."""
    global _current
    _current = new
