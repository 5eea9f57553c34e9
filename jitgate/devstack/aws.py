"""Seed a local AWS (a moto server) with everything the broker and the gateway use.

`seed` creates the KMS signing key(s), the DynamoDB table, the audit bucket, the approvals
topic and the upstream credentials in Secrets Manager, with the same shapes as template.yaml.
`moto_server()` runs `moto.server.ThreadedMotoServer` in a child process, so no in-process
`mock_aws` of another test can reset its state (`python -m jitgate.devstack.aws` does the same
from a shell and prints the endpoint); `local_broker()` runs the broker's local adapter.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from jitgate.devstack.process import ChildServer
from jitgate.policy import Policy

DEFAULT_REGION = "us-east-1"
# Fake credentials for the local endpoint only; moto accepts anything.
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass(frozen=True)
class Stack:
    """Names of the seeded resources; `env()` gives the broker's environment for them."""

    key_id: str
    table: str
    bucket: str
    topic_arn: str
    region: str
    endpoint_url: str | None = None
    key_ids: tuple[str, ...] = ()
    secrets: Mapping[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {
            "JITGATE_KMS_KEY_IDS": ",".join(self.key_ids or (self.key_id,)),
            "JITGATE_TABLE": self.table,
            "JITGATE_BUCKET": self.bucket,
            "JITGATE_TOPIC_ARN": self.topic_arn,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            **FAKE_CREDENTIALS,
        }
        if self.endpoint_url:
            env["AWS_ENDPOINT_URL"] = self.endpoint_url
        return env


def _client(service: str, endpoint_url: str | None, region: str) -> Any:
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"]),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]),
    )


def _secret_string(policy: Policy | None, secret_id: str, value: str) -> str:
    """The stored form of a credential: JSON `{json_key: value}` when the policy names a key."""
    if policy is not None:
        for conn in policy.connections.values():
            if conn.credential.secret_id == secret_id and conn.credential.json_key:
                return json.dumps({conn.credential.json_key: value})
    return value


def seed(
    endpoint_url: str | None,
    *,
    policy: Policy | None,
    secrets: Mapping[str, str],
    region: str = DEFAULT_REGION,
    keys: int = 1,
    prefix: str = "jitgate",
) -> Stack:
    """Create the broker's resources in the AWS at `endpoint_url` (None: boto3's default, e.g. mock_aws).

    `secrets` maps a Secrets Manager secret id to the raw upstream credential; when the policy
    gives that connection a `json_key`, the secret is stored as JSON under that key. Every secret
    the policy names must be given, so a test never runs against a half-seeded stack. Names get
    a random suffix so several stacks can share one moto server.
    """
    if policy is not None:
        missing = {c.credential.secret_id for c in policy.connections.values()} - set(secrets)
        if missing:
            raise ValueError(f"seed needs values for the policy's secrets {sorted(missing)}")
    suffix = uuid.uuid4().hex[:8]
    kms = _client("kms", endpoint_url, region)
    key_ids = tuple(
        kms.create_key(
            KeySpec="ECC_NIST_P256",
            KeyUsage="SIGN_VERIFY",
            Description=f"{prefix} token signing key {i + 1}",
        )["KeyMetadata"]["KeyId"]
        for i in range(keys)
    )
    table = f"{prefix}-state-{suffix}"
    ddb = _client("dynamodb", endpoint_url, region)
    ddb.create_table(
        TableName=table,
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
    )
    bucket = f"{prefix}-audit-{suffix}"
    s3 = _client("s3", endpoint_url, region)
    if region == "us-east-1":
        s3.create_bucket(Bucket=bucket)
    else:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    topic_arn = _client("sns", endpoint_url, region).create_topic(Name=f"{prefix}-approvals-{suffix}")["TopicArn"]
    sm = _client("secretsmanager", endpoint_url, region)
    for secret_id, value in secrets.items():
        sm.create_secret(Name=secret_id, SecretString=_secret_string(policy, secret_id, value))
    return Stack(
        key_id=key_ids[0],
        table=table,
        bucket=bucket,
        topic_arn=topic_arn,
        region=region,
        endpoint_url=endpoint_url,
        key_ids=key_ids,
        secrets=dict(secrets),
    )


def moto_server() -> ChildServer:
    """A moto server in a child process on loopback (start it; `.url` is the endpoint)."""
    return ChildServer([sys.executable, "-m", "jitgate.devstack.aws", "--port", "0"])


def broker_env(stack: Stack, policy_path: str | Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a local broker (`python -m broker.local`) using `stack` and a policy file."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("JITGATE_")}
    env.update(stack.env())
    env.update({"JITGATE_POLICY": str(policy_path), "POWERTOOLS_METRICS_DISABLED": "true"})
    return env


def local_broker(stack: Stack, policy_path: str | Path, *, cwd: Path | None = None, port: int = 0) -> ChildServer:
    """The broker's local adapter in a child process on `port` (0: a free one); its issuer URL is
    its own base URL."""
    argv = [sys.executable, "-m", "broker.local", "--port", str(port)]
    return ChildServer(argv, env=broker_env(stack, policy_path), cwd=cwd)


def _serve(port: int, *, seed_policy: str | None, env_file: str | None, container_endpoint: str | None) -> None:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per AWS call otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # Without TCP_NODELAY every response waits out a delayed ACK (~40 ms a call); accepted
    # sockets inherit the option from the listening one on Linux.
    listener = getattr(getattr(server, "_server", None), "socket", None)
    if listener is not None:
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    host, bound = server.get_host_and_port()
    url = f"http://{host}:{bound}"
    print(url, flush=True)
    if seed_policy:
        from jitgate.policy import load_policy

        policy = load_policy(seed_policy)
        fake = {c.credential.secret_id: f"fake-{uuid.uuid4().hex}" for c in policy.connections.values()}
        stack = seed(url, policy=policy, secrets=fake)
        env = {"JITGATE_ISSUER": "http://127.0.0.1:3000", "JITGATE_DEFAULT_TTL": "15m", **stack.env()}
        if container_endpoint:
            env["AWS_ENDPOINT_URL"] = container_endpoint
        if env_file:
            # The shape `sam local invoke/start-api --env-vars` reads: variables per function.
            Path(env_file).write_text(json.dumps({"BrokerFunction": env}, indent=2) + "\n", encoding="utf-8")
        print(json.dumps(env), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a moto server on loopback and print its endpoint.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", metavar="POLICY", help="seed the broker's resources for this policy file")
    parser.add_argument("--env-file", help="with --seed: write a `sam local --env-vars` file here")
    parser.add_argument(
        "--container-endpoint",
        help="with --seed: the endpoint as a container sees it, e.g. http://host.docker.internal:5000",
    )
    args = parser.parse_args(argv)
    _serve(args.port, seed_policy=args.seed, env_file=args.env_file, container_endpoint=args.container_endpoint)


if __name__ == "__main__":
    main()
