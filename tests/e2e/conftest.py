"""Session-scoped real parts for end-to-end tests: local AWS, an OIDC issuer, the broker.

- `moto_server`: endpoint URL of a moto server (child process); sets region, fake credentials
  and AWS_ENDPOINT_URL in this process's environment for the session, so plain boto3 clients
  reach it.
- `oidc_issuer`: a jitgate.devstack.oidc_issuer.OidcIssuer on loopback (`.url`, `.mint(...)`).
- `test_policy` / `policy_path`: the example-style dev policy (jitgate.devstack.policy) bound
  to that issuer; build a gateway policy with `policy_yaml(oidc_issuer.url, upstreams=...)`.
- `aws_stack`: a jitgate.devstack.aws.Stack seeded with the policy's secrets (fake values made
  now, in `aws_stack.secrets`).
- `broker`: base URL of `python -m broker.local` running against all of the above.
- `mint`: mint a JIT token through the broker for a dev identity; returns the JSON answer.
- `chroma_server`: a real Chroma server (`chroma run`) with `candidates` seeded.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from jitgate.devstack.aws import DEFAULT_REGION, FAKE_CREDENTIALS, Stack, local_broker, seed
from jitgate.devstack.aws import moto_server as moto_server_process
from jitgate.devstack.chroma import ChromaServer, seed_candidates
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import CI_CLAIMS, dev_policy, policy_yaml
from jitgate.devstack.process import ChildServer
from jitgate.policy import Policy

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    with moto_server_process() as server:
        mp = pytest.MonkeyPatch()
        mp.setenv("AWS_ENDPOINT_URL", server.url)
        mp.setenv("AWS_DEFAULT_REGION", DEFAULT_REGION)
        mp.setenv("AWS_REGION", DEFAULT_REGION)
        for name, value in FAKE_CREDENTIALS.items():
            mp.setenv(name, value)
        mp.delenv("AWS_PROFILE", raising=False)
        mp.delenv("AWS_SESSION_TOKEN", raising=False)
        try:
            yield server.url
        finally:
            mp.undo()


@pytest.fixture(scope="session")
def oidc_issuer() -> Iterator[OidcIssuer]:
    with OidcIssuer() as issuer:
        yield issuer


@pytest.fixture(scope="session")
def test_policy(oidc_issuer: OidcIssuer) -> Policy:
    return dev_policy(oidc_issuer.url)


@pytest.fixture(scope="session")
def policy_path(oidc_issuer: OidcIssuer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_text(policy_yaml(oidc_issuer.url), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def aws_stack(moto_server: str, test_policy: Policy) -> Stack:
    fake = {
        c.credential.secret_id: f"upstream-{name}-{secrets.token_urlsafe(18)}"
        for name, c in test_policy.connections.items()
    }
    return seed(moto_server, policy=test_policy, secrets=fake)


@pytest.fixture(scope="session")
def broker_process(aws_stack: Stack, policy_path: Path) -> Iterator[ChildServer]:
    """The broker's child process (`.url`, `.log` holds its last log lines)."""
    with local_broker(aws_stack, policy_path, cwd=REPO) as proc:
        yield proc


@pytest.fixture(scope="session")
def broker(broker_process: ChildServer) -> str:
    return broker_process.url


@pytest.fixture(scope="session")
def mint(broker: str, oidc_issuer: OidcIssuer) -> Callable[..., dict[str, Any]]:
    """mint(connection, sub=..., claims=..., **body) -> the broker's JSON answer (asserts 201)."""

    def _mint(
        connection: str = "cohere-test",
        *,
        sub: str = "repo:acme/search-ranker:ref:refs/heads/main",
        claims: Mapping[str, Any] | None = None,
        **body: Any,
    ) -> dict[str, Any]:
        oidc = oidc_issuer.mint(sub, {**CI_CLAIMS, **(claims or {})})
        resp = httpx.post(
            f"{broker}/v1/tokens",
            json={"connection": connection, **body},
            headers={"Authorization": f"Bearer {oidc}"},
            timeout=10,
        )
        assert resp.status_code == 201, resp.text
        answer: dict[str, Any] = resp.json()
        return answer

    return _mint


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    """A real `chroma run` on loopback with the collection `candidates` seeded (dimension 8)."""
    with ChromaServer(tmp_path_factory.mktemp("chroma")) as server:
        seed_candidates(server.url)
        yield server
