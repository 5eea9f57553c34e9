"""`jitgate gateway` started exactly as the ECS fleet starts it, against moto.

The command is the image's ENTRYPOINT (infra/gateway/Dockerfile) plus the task definition's
`Command`, the environment the Dockerfile's ENV plus the container's `Environment`
(infra/gateway/gateway.yaml, parsed, parameters filled in). What differs, and only that: the
listen address and port (loopback, a free port), /var/lib/jitgate under a temporary folder, AWS
reached through a moto server with fake credentials (the task role's stand-in), the test
upstream's private CA (a real upstream has a public certificate), and PYTHONPATH naming this
checkout (the image has its code installed).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import yaml
from cfnlint.decode import decode

from jitgate.devstack.aws import DEFAULT_REGION, FAKE_CREDENTIALS, Stack
from jitgate.devstack.gateway import Gateway, launch, write_bundle
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import policy_dict, secret_id
from jitgate.devstack.upstream import Upstream
from jitgate.gateway_ca import fingerprint
from tests.reliability.harness import client, rerank, wait_for

REPO = Path(__file__).resolve().parents[2]
GATEWAY_DIR = REPO / "infra" / "gateway"
JITGATE_BIN = Path(sys.executable).with_name("jitgate")


def _resolve(value: Any, params: Mapping[str, str]) -> str:
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return params[value["Ref"]]
    if isinstance(value, dict) and set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
        return re.sub(r"\$\{([^}]+)\}", lambda m: params[m.group(1)], value["Fn::Sub"])
    assert isinstance(value, str | int), value
    return str(value)


def container_launch(params: Mapping[str, str], root: Path) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of the gateway container, from the Dockerfile and the template."""
    template, matches = decode(str(GATEWAY_DIR / "gateway.yaml"))
    assert not matches and template is not None
    [container] = template["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    dockerfile = (GATEWAY_DIR / "Dockerfile").read_text().replace("\\\n", " ")
    entry: list[str] = json.loads(re.search(r"^ENTRYPOINT (.*)$", dockerfile, re.M).group(1))  # type: ignore[union-attr]
    argv = [*entry, *(_resolve(v, params) for v in container.get("Command", []))]
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.*)$", dockerfile, re.M):
        env.update(pair.split("=", 1) for pair in line.split())
    env.update({e["Name"]: _resolve(e["Value"], params) for e in container["Environment"]})
    # Only what differs here (see the module docstring).
    argv[0] = str(JITGATE_BIN)
    argv[argv.index("--listen-host") + 1] = "127.0.0.1"
    argv[argv.index("--listen-port") + 1] = "0"
    argv[argv.index("--metrics-host") + 1] = "127.0.0.1"  # the fleet's 0.0.0.0:9090, on loopback, any free port
    argv[argv.index("--metrics-port") + 1] = "0"
    argv = [a.replace("/var/lib/jitgate", str(root)) for a in argv]
    env = {k: v.replace("/var/lib/jitgate", str(root)) for k, v in env.items()}
    return argv, env


@pytest.fixture
def policy_bucket(moto_server: str) -> str:
    name = "jitgate-policy-" + secrets.token_hex(4)
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket=name)
    return name


def _put(moto: str, bucket: str, text: str) -> None:
    boto3.client("s3", endpoint_url=moto).put_object(Bucket=bucket, Key="gateway/policy.yaml", Body=text.encode())


def _policy(issuer: str, upstream: str) -> str:
    doc = policy_dict(issuer, upstreams={"cohere-test": upstream})
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.fixture
def upstream(aws_stack: Stack) -> Iterator[Upstream]:
    with Upstream(api_keys=[aws_stack.secrets[secret_id("cohere-test")]]) as up:
        yield up


@pytest.fixture
def fleet_ca(tmp_path: Path, moto_server: str) -> tuple[str, Path]:
    """`jitgate ca init` against moto: the secret's name and the certificate it wrote for clients."""
    name = "jitgate/gateway-ca-" + secrets.token_hex(4)
    cert = tmp_path / "fleet-ca.pem"
    proc = subprocess.run(
        [str(JITGATE_BIN), "ca", "init", "--secret", name, "--cert-out", str(cert)],
        capture_output=True, text=True, check=False, env={**os.environ, "AWS_ENDPOINT_URL": moto_server},
    )
    assert proc.returncode == 0, proc.stderr
    assert "PRIVATE KEY" not in proc.stdout + proc.stderr
    return name, cert


def _start(
    tmp_path: Path, *, bucket: str, upstream: Upstream, broker: str, stack: Stack, moto: str, mask_secret: str,
    ca_secret: str,
) -> Gateway:
    params = {
        "GatewayCaSecretArn": ca_secret,
        "PolicyS3Uri": f"s3://{bucket}/gateway/policy.yaml",
        "PolicyRefreshSeconds": "1",
        "MaskKeySecretArn": mask_secret,
        "BrokerIssuer": broker,
        "JwksUrl": f"{broker}/.well-known/jwks.json",
        "TableName": stack.table,
        "AuditBucketName": bucket,  # not the session's audit bucket: other tests query its records
    }
    root = tmp_path / ("var-lib-jitgate-" + secrets.token_hex(3))
    argv, env = container_launch(params, root)
    ca = tmp_path / "upstream-ca.pem"
    ca.write_bytes(upstream.ca_pem())
    env.update(FAKE_CREDENTIALS)
    # PYTHONPATH: the code of this checkout (the image installs it; the venv's `jitgate` script would
    # import the checkout the venv was installed from).
    env.update({"AWS_ENDPOINT_URL": moto, "AWS_REGION": DEFAULT_REGION, "JITGATE_UPSTREAM_CA": str(ca),
                "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    return launch(argv, confdir=root / "ca", env=env, log_lines=5000)


@pytest.fixture
def mask_secret(moto_server: str) -> str:
    sm = boto3.client("secretsmanager", endpoint_url=moto_server)
    arn: str = sm.create_secret(Name="jitgate/mask-" + secrets.token_hex(4), SecretString=secrets.token_hex(32))["ARN"]
    return arn


def _events(gw: Gateway, event: str) -> list[dict[str, Any]]:
    return [line for line in map(_json, list(gw.log)) if line.get("event") == event]


def _json(line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def test_the_task_definition_starts_and_follows_the_policy_in_s3(
    tmp_path: Path, policy_bucket: str, upstream: Upstream, broker: str, aws_stack: Stack, moto_server: str,
    oidc_issuer: OidcIssuer, mint: Callable[..., dict[str, Any]], mask_secret: str, fleet_ca: tuple[str, Path],
) -> None:
    _put(moto_server, policy_bucket, _policy(oidc_issuer.url, upstream.url))
    gw = _start(tmp_path, bucket=policy_bucket, upstream=upstream, broker=broker, stack=aws_stack, moto=moto_server,
                mask_secret=mask_secret, ca_secret=fleet_ca[0])
    with gw:
        bundle = gw.client_bundle(tmp_path / "bundle.pem")
        token = mint("cohere-test")["token"]
        with client(gw, bundle, token) as c:
            assert rerank(c, upstream).status_code == 200, "\n".join(gw.log)
        assert not any("no jitgate_mask_key_secret" in line for line in gw.log)  # the fleet's key was read

        # A bad new version: the gateway says so and goes on with the last good policy.
        _put(moto_server, policy_bucket, "version: 1\nconnections: [not, a, mapping\n")
        assert wait_for(lambda: any(e.get("code") == "policy_invalid" for e in _events(gw, "policy")), 30), (
            "\n".join(gw.log)
        )
        with client(gw, bundle, token) as c:
            assert rerank(c, upstream).status_code == 200
        # Readiness says so, and stays ready: the whole fleet sees the same bad object (docs/deployment.md).
        ready = httpx.get(gw.metrics_url() + "/readyz", timeout=10)
        assert (ready.status_code, ready.json()["policy_current"]) == (200, False), ready.text

        # A valid new version is taken without a restart: the connection's upstream moved (nowhere).
        with Upstream(api_keys=["unused"]) as gone:
            moved = gone.url
        _put(moto_server, policy_bucket, _policy(oidc_issuer.url, moved))
        assert wait_for(lambda: any("in use" in e["msg"] for e in _events(gw, "policy")), 30), "\n".join(gw.log)
        assert httpx.get(gw.metrics_url() + "/readyz", timeout=10).json()["policy_current"] is True
        with client(gw, bundle, token) as c:
            answer = rerank(c, upstream)
        assert (answer.status_code, answer.json()["code"]) == (502, "upstream_unavailable"), answer.text
        assert gw.proc.poll() is None


def test_a_bad_policy_at_start_stops_the_start(
    tmp_path: Path, policy_bucket: str, upstream: Upstream, broker: str, aws_stack: Stack, moto_server: str,
    mask_secret: str, fleet_ca: tuple[str, Path],
) -> None:
    _put(moto_server, policy_bucket, "version: 1\nconnections: [not, a, mapping\n")
    with pytest.raises(RuntimeError) as info:
        _start(tmp_path, bucket=policy_bucket, upstream=upstream, broker=broker, stack=aws_stack, moto=moto_server,
               mask_secret=mask_secret, ca_secret=fleet_ca[0]).stop()
    assert "jitgate_policy" in str(info.value) and "mitmdump exited" in str(info.value)


def test_every_task_signs_with_the_fleet_ca(
    tmp_path: Path, policy_bucket: str, upstream: Upstream, broker: str, aws_stack: Stack, moto_server: str,
    oidc_issuer: OidcIssuer, mint: Callable[..., dict[str, Any]], mask_secret: str, fleet_ca: tuple[str, Path],
) -> None:
    """Two starts (two tasks, each with its own empty confdir), one CA: the one `jitgate ca init`
    stored; a client that trusts only its certificate (and the public roots) talks to both."""
    _put(moto_server, policy_bucket, _policy(oidc_issuer.url, upstream.url))
    bundle = write_bundle(tmp_path / "clients.pem", fleet_ca[1].read_bytes())
    seen = set()
    token = mint("cohere-test")["token"]
    for _task in range(2):
        gw = _start(tmp_path, bucket=policy_bucket, upstream=upstream, broker=broker, stack=aws_stack,
                    moto=moto_server, mask_secret=mask_secret, ca_secret=fleet_ca[0])
        with gw:
            seen.add(fingerprint(gw.ca_pem))
            with client(gw, bundle, token) as c:
                assert rerank(c, upstream).status_code == 200, "\n".join(gw.log)
            assert not any("PRIVATE KEY" in line for line in gw.log)
    assert seen == {fingerprint(fleet_ca[1].read_bytes())}


def test_a_ca_secret_that_cannot_be_read_stops_the_start(
    tmp_path: Path, policy_bucket: str, upstream: Upstream, broker: str, aws_stack: Stack, moto_server: str,
    oidc_issuer: OidcIssuer, mask_secret: str,
) -> None:
    _put(moto_server, policy_bucket, _policy(oidc_issuer.url, upstream.url))
    with pytest.raises(RuntimeError) as info:
        _start(tmp_path, bucket=policy_bucket, upstream=upstream, broker=broker, stack=aws_stack, moto=moto_server,
               mask_secret=mask_secret, ca_secret="jitgate/no-such-ca").stop()
    assert "ca_unavailable" in str(info.value)
