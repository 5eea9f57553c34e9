"""No secret or token in any log line of a real `jitgate gateway` process.

The gateway runs as deployed (`jitgate gateway`, which becomes mitmdump), with `flow_detail=3` and
debug verbosity asked for on its command line: the gateway keeps the flow output off whatever it
is told. Every refusal path is driven with secrets and tokens planted in the URL, the query, the
headers, the body and the proxy credentials; afterwards none of them is anywhere in the process's
stdout or stderr, every line is one JSON object, and each refusal has its line (flow id, decision,
code) in the log.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import string
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from jitgate.devstack.aws import Stack
from jitgate.devstack.gateway import Gateway, launch
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import policy_dict, secret_id
from jitgate.devstack.upstream import Upstream
from tests.hostile.conftest import Hostile, answer_of, connect, status_and_code, tunnel

JITGATE = Path(sys.executable).with_name("jitgate")


def _fake_aws_key() -> str:
    return "AKIA" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))


def _fake_jwt() -> str:
    def part() -> str:
        return base64.urlsafe_b64encode(secrets.token_bytes(24)).rstrip(b"=").decode()

    return "eyJ" + part() + ".eyJ" + part() + "." + part()


@dataclass
class Logged:
    h: Hostile
    planted: list[str]

    def plant(self, value: str) -> str:
        self.planted.append(value)
        return value

    def secret(self) -> str:
        return self.plant("plant" + secrets.token_hex(12))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens on it once closed


def start_cli_gateway(
    work: Path, *, issuer: str, upstream: Upstream, broker: str, stack: Stack, moto: str, extra: list[str]
) -> Gateway:
    """`jitgate gateway` with the options of a deployed task, on a free loopback port."""
    doc = policy_dict(
        issuer,
        upstreams={
            "cohere-test": upstream.url,
            "jina-test": f"https://127.0.0.1:{_closed_port()}",  # upstream down
        },
    )
    policy = work / "policy.yaml"
    policy.write_text(yaml.safe_dump(doc, sort_keys=False))
    ca = work / "upstream-ca.pem"
    ca.write_bytes(upstream.ca_pem())
    confdir = work / "confdir"
    # Its own audit bucket: the session's belongs to the record queries of other tests.
    bucket = "jitgate-logs-" + secrets.token_hex(4)
    boto3.client("s3", endpoint_url=moto).create_bucket(Bucket=bucket)
    argv = [
        str(JITGATE), "gateway", "--policy", str(policy), "--jwks-url", f"{broker}/.well-known/jwks.json",
        "--table", stack.table, "--bucket", bucket, "--issuer", broker, "--listen-port", "0",
        "--metrics-port", "0", "--confdir", str(confdir), "--spool-dir", str(work / "spool"), "--upstream-ca", str(ca),
        "--aws-endpoint", moto, "--set", "jitgate_gateway_id=logs-" + secrets.token_hex(3), *extra,
    ]
    return launch(argv, confdir=confdir, log_lines=100_000)


@pytest.fixture(scope="module")
def logged(
    tmp_path_factory: pytest.TempPathFactory, oidc_issuer: OidcIssuer, broker: str, aws_stack: Stack, moto_server: str
) -> Iterator[Logged]:
    work = tmp_path_factory.mktemp("logs")
    keys = [aws_stack.secrets[secret_id("cohere-test")]]
    with Upstream(api_keys=keys) as up:
        gw = start_cli_gateway(
            work, issuer=oidc_issuer.url, upstream=up, broker=broker, stack=aws_stack, moto=moto_server,
            extra=["--set", "flow_detail=3", "--set", "termlog_verbosity=debug"],
        )
        h = Hostile(gw, up, gw.client_bundle(work / "bundle.pem"), work / "spool", "logs", aws_stack, moto_server,
                    broker)
        yield Logged(h, list(aws_stack.secrets.values()))
        gw.stop()


def _request(lg: Logged, *, path: str = "/v2/rerank", host: str = "", body: bytes | None = None) -> bytes:
    """A POST with secrets in its query, its headers and its body."""
    if body is None:
        doc = {"model": "rerank-v3.5", "query": "q " + lg.secret(), "documents": ["a", "b " + lg.secret()]}
        body = json.dumps(doc).encode()
    query = f"?api_key={lg.secret()}&x={lg.secret()}#{lg.secret()}"
    head = (
        f"POST {path}{query} HTTP/1.1\r\nHost: {host or f'127.0.0.1:{lg.h.upstream.port}'}\r\n"
        f"Authorization: Bearer {lg.secret()}\r\nX-Api-Key: {lg.secret()}\r\nCookie: s={lg.secret()}\r\n"
        f"X-Note: {lg.secret()}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def _through_tunnel(lg: Logged, token: str | None, request: bytes, *, tls: bool = True) -> bytes:
    with tunnel(lg.h, token, tls=tls) as sock:
        sock.sendall(request)
        return answer_of(sock, timeout=5.0)


def _refusals(lg: Logged, mint: Callable[..., dict[str, Any]]) -> dict[str, tuple[int, str | None]]:
    """Drive every refusal path; the status and code each one was answered with."""
    seen: dict[str, tuple[int, str | None]] = {}
    token = lg.plant(mint("cohere-test")["token"])
    seen["no-token"] = status_and_code(_through_tunnel(lg, None, _request(lg)))
    seen["bad-token"] = status_and_code(_through_tunnel(lg, lg.plant(_fake_jwt()), _request(lg)))
    # No token on a plain-HTTP request with secrets in its URL (the request the issue reproduced).
    with socket.create_connection(("127.0.0.1", lg.h.gateway.port), timeout=10) as sock:
        sock.sendall(
            f"GET http://api.cohere.com/v2/rerank?k={_fake_aws_key()}&t={lg.secret()} HTTP/1.1\r\n"
            f"Host: api.cohere.com\r\nProxy-Authorization: Basic "
            f"{base64.b64encode(f'jit:{lg.secret()}'.encode()).decode()}\r\nConnection: close\r\n\r\n".encode()
        )
        seen["plain-http-bad-credentials"] = status_and_code(answer_of(sock))
    # A CONNECT refused before any tunnel: bad token in the credentials, a secret in the target.
    sock, head = connect(lg.h, lg.plant(_fake_jwt()), f"{lg.secret()}.example:443")
    sock.close()
    seen["connect-bad-token"] = (int(head.split(b" ", 2)[1]), None)
    seen["scope"] = status_and_code(_through_tunnel(lg, token, _request(lg, path="/v1/embed")))
    leak = {"model": "rerank-v3.5", "query": "k " + lg.plant(_fake_aws_key()), "documents": ["a"]}
    seen["leak-block"] = status_and_code(_through_tunnel(lg, token, _request(lg, body=json.dumps(leak).encode())))
    bad_body = ("{not json " + lg.secret()).encode()
    seen["bad-body"] = status_and_code(_through_tunnel(lg, token, _request(lg, body=bad_body)))
    seen["bad-host"] = status_and_code(_through_tunnel(lg, token, _request(lg, host=f"{lg.secret()}.example")))
    garbage = b"\x00\x01" + lg.secret().encode() + b" " + _request(lg)
    seen["not-http-tls"] = status_and_code(_through_tunnel(lg, None, garbage) or b"HTTP/1.1 000 none\r\n\r\n")
    seen["not-http-plain"] = status_and_code(_through_tunnel(lg, None, garbage, tls=False) or b"HTTP/1.1 000 x\r\n\r\n")
    seen["bad-request-line"] = status_and_code(
        _through_tunnel(lg, token, f"GET /?k={lg.secret()} HTTP/9\r\n\r\n".encode()) or b"HTTP/1.1 000 x\r\n\r\n"
    )
    jina = lg.plant(mint("jina-test")["token"])
    # What leak_guard lets through (no secret-shaped value in it), to an upstream that is down.
    clean = json.dumps({"model": "rerank-2", "query": "q", "documents": ["a", "b"]}).encode()
    down = (
        f"POST /v1/rerank?trace={lg.secret()} HTTP/1.1\r\nHost: 127.0.0.1:{lg.h.upstream.port}\r\n"
        f"X-Note: {lg.secret()}\r\nContent-Type: application/json\r\nContent-Length: {len(clean)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + clean
    seen["upstream-down"] = status_and_code(_through_tunnel(lg, jina, down))
    return seen


def test_no_planted_secret_or_token_reaches_the_gateway_log(
    logged: Logged, mint: Callable[..., dict[str, Any]]
) -> None:
    seen = _refusals(logged, mint)
    gw = logged.h.gateway
    assert all(400 <= status < 600 for status, _code in seen.values()), seen
    # Every flow refusal has its line; wait for them (the log is read by a thread).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum('"event":"flow' in line for line in gw.log) < 8:
        time.sleep(0.1)
    gw.stop()
    text = "\n".join(gw.log)
    leaked = [value for value in logged.planted if value in text]
    assert leaked == [], f"{len(leaked)} planted values in the log"
    raw = [line for line in gw.log if line.strip()]
    # Every line is JSON but mitmdump's own before it loaded the chain (the script path), one per
    # worker process (`jitgate gateway` runs one per CPU by default).
    plain = [line for line in raw if not line.startswith("{")]
    assert plain and all("Loading script" in line for line in plain), plain
    lines = [json.loads(line) for line in raw if line.startswith("{")]
    flows = [line for line in lines if line.get("event") in ("flow", "flow_error")]
    codes = {line.get("code") for line in flows}
    answered = {code for _status, code in seen.values()} - {None, "bad_request", "upstream_unavailable"}
    assert answered <= codes, (answered, codes)  # each refusal the gateway answered has its line
    assert any(line["event"] == "flow_error" and line["conn"] == "jina-test" for line in flows)
    assert all(line["flow"] and line["decision"] and line["client"] for line in flows)
    # mitmproxy's own message on bytes that are no HTTP, with the bytes scrubbed out of it.
    assert any("Bad HTTP request line: <bytes>" in line["msg"] for line in lines)
    assert any("flow_detail kept at 0" in line["msg"] for line in lines)
