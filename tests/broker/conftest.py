"""Handler tests: moto's mock_aws, a real OIDC issuer on loopback, API GW v2 events from files."""

from __future__ import annotations

import base64
import copy
import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from broker import deps
from broker.app import handler
from broker.deps import Services, Settings
from jitgate.devstack.aws import Stack, seed
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import policy_yaml
from jitgate.errors import CODES
from jitgate.policy import Policy, load_policy

EVENTS = Path(__file__).parent / "events"
BROKER_URL = "https://broker.example.test"
NOW = 1_800_000_000.0


@dataclass
class Clock:
    now: float = NOW

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class FakeLambdaContext:
    function_name: str = "jitgate-broker"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:jitgate-broker"
    aws_request_id: str = field(default_factory=lambda: secrets.token_hex(16))
    log_group_name: str = "/aws/lambda/jitgate-broker"
    log_stream_name: str = "test"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()


@pytest.fixture(scope="session")
def issuer() -> Iterator[OidcIssuer]:
    with OidcIssuer() as iss:
        yield iss


@pytest.fixture
def policy_file(issuer: OidcIssuer, tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(policy_yaml(issuer.url), encoding="utf-8")
    return path


@pytest.fixture
def policy(policy_file: Path) -> Policy:
    return load_policy(policy_file)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """mock_aws with fake credentials; any AWS_ENDPOINT_URL (a moto server's) is dropped first."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


@pytest.fixture
def stack(aws: None, policy: Policy) -> Stack:
    fake = {c.credential.secret_id: secrets.token_urlsafe(24) for c in policy.connections.values()}
    return seed(None, policy=policy, secrets=fake, keys=2)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def env(stack: Stack, policy_file: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {**stack.env(), "JITGATE_POLICY": str(policy_file), "JITGATE_ISSUER": BROKER_URL}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def svc(env: dict[str, str], clock: Clock) -> Iterator[Services]:
    import os

    built = Services.build(Settings.from_env(os.environ), clock=clock)
    deps.use(built)
    yield built
    deps.use(None)


def load_event(name: str, *, token: str | None = None, jti: str | None = None, body: Any = None) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    event = copy.deepcopy(event)
    if token is None:
        event["headers"].pop("authorization", None)
    else:
        event["headers"]["authorization"] = f"Bearer {token}"
    if jti is not None:
        for holder, key in ((event, "rawPath"), (event["requestContext"]["http"], "path")):
            holder[key] = holder[key].replace("REPLACE_WITH_JTI", jti)
        event["pathParameters"] = {"jti": jti}
    if body is not None:
        event["body"] = body if isinstance(body, str) else json.dumps(body)
        event["isBase64Encoded"] = False
    return event


def api_event(method: str, path: str, token: str | None, body: Any = None) -> dict[str, Any]:
    """A v2 event for any route (`/v1/approvals/{id}/...` gets its path parameter); a `str` body is
    sent as it is, anything else as JSON."""
    event: dict[str, Any] = json.loads((EVENTS / "revoke.json").read_text())
    route = path
    params: dict[str, str] = {}
    parts = path.strip("/").split("/")
    if len(parts) >= 3 and parts[1] == "approvals":
        params["approval_id"] = parts[2]
        route = "/v1/approvals/{approval_id}" + ("/" + parts[3] if len(parts) > 3 else "")
    elif len(parts) == 3 and parts[1] == "tokens":
        params["jti"] = parts[2]
        route = "/v1/tokens/{jti}"
    event["routeKey"] = event["requestContext"]["routeKey"] = f"{method} {route}"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["pathParameters"] = params or None
    if token is None:
        event["headers"].pop("authorization")
    else:
        event["headers"]["authorization"] = f"Bearer {token}"
    event["body"] = None if body is None else body if isinstance(body, str) else json.dumps(body)
    return event


def b64_body(event: dict[str, Any]) -> dict[str, Any]:
    event = copy.deepcopy(event)
    event["body"] = base64.b64encode(event["body"].encode()).decode()
    event["isBase64Encoded"] = True
    return event


Invoke = Callable[[dict[str, Any]], tuple[int, dict[str, Any], dict[str, str]]]


@pytest.fixture
def invoke(svc: Services, lambda_context: FakeLambdaContext) -> Invoke:
    def _invoke(event: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        result = handler(event, lambda_context)
        status, body = result["statusCode"], json.loads(result["body"])
        if status >= 400:  # every refusal the broker answers is a class of jitgate/errors.py, with its status
            assert CODES[body["code"]].status == status, body
        return status, body, {k.lower(): v for k, v in result["headers"].items()}

    return _invoke
