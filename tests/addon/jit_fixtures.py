"""Shared pieces of the data-path hook tests: a signing key, a policy, tokens, a moto table."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from moto import mock_aws

from jitgate.token import AUDIENCE, Claims, KeySet, encode_token, new_jti, public_jwk

ISSUER = "https://broker.test"
JWKS_URL = ISSUER + "/.well-known/jwks.json"
TABLE = "jitgate-test"
KID = "test-key-1"

POLICY = """
version: 1
issuers:
  - {issuer: https://oidc.test, audience: jitgate}
connections:
  rerank:
    dialect: cohere
    upstream: https://127.0.0.1:9443
    hosts: [api.cohere.com]
    credential: {secret_id: jitgate/rerank, json_key: api_key, header: Authorization, format: "Bearer {secret}"}
  other:
    dialect: jina
    upstream: https://api.jina.ai
    credential: {secret_id: jitgate/jina}
  store:
    dialect: chroma
    upstream: https://store.internal:8000
    credential: {secret_id: jitgate/store, header: X-Chroma-Token, format: "{secret}"}
"""


class Signer:
    def __init__(self, kid: str = KID) -> None:
        self.kid = kid
        self.key = ec.generate_private_key(ec.SECP256R1())

    def keyset(self) -> KeySet:
        return KeySet.from_jwks({"keys": [public_jwk(self.key.public_key(), self.kid)]})

    def mint(self, **over: Any) -> str:
        now = int(time.time())
        raw: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "repo:acme/search:ref:refs/heads/main",
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "jti": new_jti(),
            "conn": "rerank",
            "scope": {"operations": ["rerank"]},
            "limits": {},
            "mask": "default",
        }
        raw.update(over)
        claims = Claims.model_validate(raw)
        return encode_token(claims, kid=self.kid, sign_der=lambda m: self.key.sign(m, ec.ECDSA(hashes.SHA256())))


@pytest.fixture(name="anyio_backend")
def anyio_backend_fixture() -> str:
    return "asyncio"


@pytest.fixture(name="policy_file")
def policy_file_fixture(tmp_path: Path) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(POLICY)
    return p


@pytest.fixture(name="aws")
def aws_fixture() -> Iterator[dict[str, Any]]:
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        ddb.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        yield {"dynamodb": ddb, "secretsmanager": sm}
