"""Proxy clients reach the gateway over TLS: `HTTPS_PROXY=https://jit:<token>@gateway:8080`.

mitmproxy 12 serves a Secure Web Proxy on its regular listener: a connection that starts with a
TLS ClientHello is TLS to the proxy, with a certificate from the gateway CA for the name the
client asked for, and the CONNECT with its Proxy-Authorization (the JIT token) travels inside it.
The same port still takes plain proxy connections. Tested with the real clients a job uses (curl,
httpx, requests) through a real gateway, and on the wire: a relay in front of the gateway records
every byte the clients sent, and the token is not among them.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from jitgate.client import Minted
from jitgate.devstack.aws import Stack
from jitgate.devstack.gateway import Gateway
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import secret_id
from jitgate.devstack.upstream import Upstream
from jitgate.run import JobEnv, job_environment, write_ca_bundle
from tests.relay import Relay
from tests.reliability.harness import DOCS, QUERY, full_gateway, write_policy

NAME = "localhost"  # the name clients give the gateway (the NLB's DNS name in the fleet)


def _rerank_body(marker: str) -> dict[str, Any]:
    return {"model": "rerank-v3.5", "query": f"{marker} {QUERY}", "documents": DOCS}


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "30", *args], capture_output=True, text=True, timeout=60, check=False,
        env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
    )


@pytest.fixture
def served(
    tmp_path: Path, aws_stack: Stack, moto_server: str, broker: str, oidc_issuer: OidcIssuer,
) -> Iterator[tuple[Gateway, Upstream, Path]]:
    """A real gateway (the whole chain) in front of a rerank upstream, and a bundle with its CA."""
    with Upstream(api_keys=[aws_stack.secrets[secret_id("cohere-test")]]) as up:
        gw = full_gateway(
            tmp_path, policy=write_policy(tmp_path, oidc_issuer.url, up), upstream=up, broker=broker,
            stack=aws_stack, moto=moto_server, gateway_id="proxy-tls-" + secrets.token_hex(3),
        )
        with gw:
            yield gw, up, gw.client_bundle(tmp_path / "bundle.pem")


def test_curl_httpx_and_requests_send_the_token_to_the_gateway_over_tls_only(
    served: tuple[Gateway, Upstream, Path], mint: Callable[..., dict[str, Any]],
) -> None:
    gw, up, bundle = served
    wire = Relay(("127.0.0.1", gw.port), record=True)
    token = mint("cohere-test")["token"]
    proxy = f"https://jit:{token}@{NAME}:{wire.port}"
    url = f"{up.url}/v2/rerank"
    auth = {"Authorization": "Bearer placeholder"}

    curl = _curl(
        "--fail-with-body", "--proxy", proxy, "--proxy-cacert", str(bundle), "--cacert", str(bundle),
        "-H", "Authorization: Bearer placeholder", "-H", "Content-Type: application/json",
        "--data", json.dumps(_rerank_body("curl")), url,
    )
    assert curl.returncode == 0, (curl.stderr, "\n".join(gw.log))
    assert json.loads(curl.stdout)["results"]

    verify = ssl.create_default_context(cafile=str(bundle))
    with httpx.Client(proxy=httpx.Proxy(proxy, ssl_context=verify), verify=verify, trust_env=False,
                      timeout=30) as client:
        answer = client.post(url, json=_rerank_body("httpx"), headers=auth)
    assert answer.status_code == 200, (answer.text, "\n".join(gw.log))

    with requests.Session() as session:
        session.trust_env = False
        session.proxies = {"https": proxy, "http": proxy}
        answer_r = session.post(url, json=_rerank_body("requests"), headers=auth, verify=str(bundle),
                                timeout=30)
    assert answer_r.status_code == 200, (answer_r.text, "\n".join(gw.log))

    # A wrong token over a TLS proxy connection: the tunnel opens, the request in it is refused (401).
    bad = proxy.replace(token, token[:-4] + "AAAA")
    refused = _curl(
        "-o", "/dev/null", "-w", "%{http_connect} %{http_code}", "--proxy", bad,
        "--proxy-cacert", str(bundle), "--cacert", str(bundle), url,
    )
    assert refused.stdout == "200 401", (refused.stdout, refused.stderr, "\n".join(gw.log))
    sent = bytes(wire.sent)
    wire.close()

    # The same relay does see a token sent as plain proxy credentials (what the check above rules out).
    plain_wire = Relay(("127.0.0.1", gw.port), record=True)
    plain_token = mint("cohere-test")["token"]
    with httpx.Client(proxy=f"http://jit:{plain_token}@127.0.0.1:{plain_wire.port}", verify=verify,
                      trust_env=False, timeout=30) as client:
        assert client.post(url, json=_rerank_body("plain"), headers=auth).status_code == 200
    plain_sent = bytes(plain_wire.sent)
    plain_wire.close()
    assert sent.startswith(b"\x16\x03")  # a TLS handshake record first
    for credential in (token.encode(), base64.b64encode(f"jit:{token}".encode()), b"Proxy-Authorization", b"CONNECT"):
        assert credential not in sent
    assert base64.b64encode(f"jit:{plain_token}".encode()) in plain_sent and b"CONNECT" in plain_sent


def test_the_proxy_certificate_names_the_gateway_as_the_client_calls_it(served: tuple[Gateway, Upstream, Path]) -> None:
    gw, _, bundle = served
    context = ssl.create_default_context(cafile=str(bundle))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=NAME) as tls:  # verified: name and CA
        tls.sendall(b"CONNECT jitgate-probe.invalid:443 HTTP/1.1\r\nHost: jitgate-probe.invalid:443\r\n\r\n")
        assert tls.recv(64).startswith(b"HTTP/1.1 4")  # the chain answers inside the TLS


_JOB = """
import json, sys
import httpx, requests
url, body = sys.argv[1], json.loads(sys.argv[2])
headers = {"Authorization": "Bearer placeholder"}
print(httpx.post(url, json=body, headers=headers, timeout=30).status_code)
print(requests.post(url, json=body, headers=headers, timeout=30).status_code)
"""


def test_a_job_under_jitgate_run_reaches_the_gateway_over_tls_with_no_code_change(
    served: tuple[Gateway, Upstream, Path], mint: Callable[..., dict[str, Any]], tmp_path: Path,
) -> None:
    """`jitgate run --gateway https://host:port`: the job's own environment (HTTPS_PROXY=https://...,
    the CA bundle variables) is all that httpx and requests need, and curl with `--proxy-cacert`."""
    gw, up, _ = served
    wire = Relay(("127.0.0.1", gw.port), record=True)
    minted = Minted.from_json(mint("cohere-test"))
    bundle = write_ca_bundle(gw.confdir / "mitmproxy-ca-cert.pem", tmp_path)
    base = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env = job_environment(base, minted, JobEnv(f"https://{NAME}:{wire.port}", bundle, None))
    assert env["HTTPS_PROXY"].startswith("https://jit:")
    # The test's upstream listens on loopback, which `jitgate run` keeps off the gateway (NO_PROXY).
    env["NO_PROXY"] = env["no_proxy"] = ""
    url, body = f"{up.url}/v2/rerank", json.dumps(_rerank_body("job"))
    job = subprocess.run([sys.executable, "-c", _JOB, url, body], env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert job.stdout.split() == ["200", "200"], (job.stdout, job.stderr, "\n".join(gw.log))
    # curl takes the proxy's CA from --proxy-cacert only (CURL_CA_BUNDLE is for the server): one flag (or .curlrc).
    curl = subprocess.run(["curl", "-sS", "--fail-with-body", "--max-time", "30", "-H", "Authorization: Bearer x",
                           "--proxy-cacert", env["CURL_CA_BUNDLE"],
                           "-H", "Content-Type: application/json", "--data", body, url],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert curl.returncode == 0, (curl.stderr, "\n".join(gw.log))
    sent = bytes(wire.sent)
    wire.close()
    assert sent.startswith(b"\x16\x03") and minted.token.encode() not in sent and b"CONNECT" not in sent
