"""The full gateway chain on real processes, for the fault and hostile-input tests.

`full_gateway(...)` starts `mitmdump -s addon/jitgate_addons.py` with every addon on, its spool
in the work folder and its records shipped to the audit bucket. AWS endpoints can be given per
service (`aws_env`), so a test cuts one service off with a `TcpRelay` and leaves the others up.
`kms_token(...)` signs arbitrary headers and claims with the broker's own KMS key, so a test can
present a token that only its claims (or header) make wrong. `records(...)` reads every session
record the gateway wrote, shipped or still in its spool.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import httpx
import yaml

from jitgate.devstack.aws import Stack
from jitgate.devstack.gateway import Gateway, jitgate_options, start_gateway
from jitgate.devstack.policy import policy_dict
from jitgate.devstack.upstream import Upstream
from jitgate.token import AUDIENCE, der_to_raw_signature, new_jti

CI_SUB = "repo:acme/search-ranker:ref:refs/heads/main"
DOCS = [
    "Carson City is the capital city of the American state of Nevada.",
    "Washington, D.C. is the capital of the United States.",
    "Capital punishment has existed in the United States since before it was a country.",
]
QUERY = "What is the capital of the United States?"


def write_policy(work: Path, issuer: str, upstream: Upstream, *, limits: Mapping[str, int] | None = None) -> Path:
    doc = policy_dict(
        issuer, upstreams={"cohere-test": upstream.url, "store-test": f"https://localhost:{upstream.port}"}
    )
    if limits is not None:
        doc["grants"][0]["limits"] = dict(limits)  # type: ignore[index]
    path = work / "policy.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def full_gateway(
    work: Path,
    *,
    policy: Path,
    upstream: Upstream,
    broker: str,
    stack: Stack,
    moto: str,
    gateway_id: str,
    jwks_url: str | None = None,
    aws_env: Mapping[str, str] | None = None,
    **options: str,
) -> Gateway:
    """Start the whole chain. With `aws_env`, boto3 in the gateway finds AWS through the environment
    (AWS_ENDPOINT_URL plus per-service AWS_ENDPOINT_URL_<SERVICE>) instead of one endpoint option."""
    ca = work / "upstream-ca.pem"
    ca.write_bytes(upstream.ca_pem())
    opts = jitgate_options(
        policy=policy,
        jwks_url=jwks_url or f"{broker}/.well-known/jwks.json",
        table=stack.table,
        aws_endpoint=moto,
        region=stack.region,
        upstream_ca=ca,
        revocation_refresh=0.5,
        revocation_staleness=3.0,
    )
    opts.update(
        {
            "jitgate_issuer": broker,
            "jitgate_bucket": stack.bucket,
            "jitgate_spool_dir": str(work / "spool"),
            "jitgate_gateway_id": gateway_id,
            "jitgate_segment_ms": "300",
            "jitgate_fsync_ms": "100",
            "jitgate_upload_backoff_max_ms": "1000",
            **options,
        }
    )
    env = dict(os.environ)
    env["AWS_MAX_ATTEMPTS"] = "1"  # a cut-off service fails at once instead of after retries
    if aws_env is not None:
        opts["jitgate_aws_endpoint"] = ""
        env.update(aws_env)
    return start_gateway(work / "gw", options=opts, env=env)


def client(gateway: Gateway, bundle: Path, token: str | None, **kwargs: Any) -> httpx.Client:
    """An httpx client going through the gateway with `token` as proxy credentials."""
    return httpx.Client(proxy=gateway.proxy_url(token), verify=str(bundle), trust_env=False, timeout=30, **kwargs)


def rerank(c: httpx.Client, upstream: Upstream, marker: str = "", **kwargs: Any) -> httpx.Response:
    body = {"model": "rerank-v3.5", "query": f"{QUERY} {marker}".strip(), "documents": DOCS}
    return c.post(f"{upstream.url}/v2/rerank", json=body, headers={"Authorization": "Bearer placeholder"}, **kwargs)


# -- tokens signed by the broker's KMS key -------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_for(broker: str, connection: str = "cohere-test", **over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": broker,
        "aud": AUDIENCE,
        "sub": CI_SUB,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": new_jti(),
        "conn": connection,
        "scope": {"operations": ["rerank"]},
        "limits": {},
        "mask": "default",
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def sign_with(sign_der: Callable[[bytes], bytes], header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
    signing_input = _b64(json.dumps(dict(header)).encode()) + "." + _b64(json.dumps(dict(claims)).encode())
    return signing_input + "." + _b64(der_to_raw_signature(sign_der(signing_input.encode())))


def kms_signer(stack: Stack, moto: str) -> Callable[[bytes], bytes]:
    kms = boto3.client("kms", endpoint_url=moto, region_name=stack.region)

    def sign(message: bytes) -> bytes:
        sig: bytes = kms.sign(KeyId=stack.key_id, Message=message, MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256")[
            "Signature"
        ]
        return sig

    return sign


def kms_token(stack: Stack, moto: str, broker: str, *, header: Mapping[str, Any] | None = None, **over: Any) -> str:
    """A token signed by the broker's KMS key with the given claim overrides (and extra header fields)."""
    head = {"alg": "ES256", "typ": "JWT", "kid": stack.key_id, **(header or {})}
    return sign_with(kms_signer(stack, moto), head, claims_for(broker, **over))


# -- records -------------------------------------------------------------------------------------


def records(moto: str, bucket: str, gateway_id: str, spool: Path | None = None) -> list[dict[str, Any]]:
    """Every session record of `gateway_id`: shipped to the bucket, plus what is still in `spool`."""
    s3 = boto3.client("s3", endpoint_url=moto)
    out: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="sessions/"):
        for obj in page.get("Contents", []):
            if f"/{gateway_id}-" in obj["Key"]:
                body = gzip.decompress(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
                out += [json.loads(line) for line in body.splitlines() if line.strip()]
    if spool is not None:
        for path in spool.rglob("*.jsonl"):
            out += [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return out


def raw_record_bytes(moto: str, bucket: str, gateway_id: str, spool: Path) -> bytes:
    """All record bytes, undecoded: to assert a value appears nowhere, whatever field it hides in."""
    s3 = boto3.client("s3", endpoint_url=moto)
    blob = b""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="sessions/"):
        for obj in page.get("Contents", []):
            if f"/{gateway_id}-" in obj["Key"]:
                blob += gzip.decompress(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
    for path in spool.rglob("*"):
        if path.is_file():
            blob += path.read_bytes()
    return blob


def wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.3) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


@contextmanager
def relay_to(url: str) -> Iterator[Any]:
    """A TcpRelay (tests/e2e/recorder_gateway.py) in front of `url`; `.up = False` cuts it off."""
    from urllib.parse import urlparse

    from tests.e2e.recorder_gateway import TcpRelay

    target = urlparse(url)
    relay = TcpRelay((target.hostname or "127.0.0.1", target.port or 80))
    try:
        yield relay
    finally:
        relay.close()
