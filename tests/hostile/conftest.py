"""One full gateway (every addon) for the hostile-input tests, on the e2e session's real parts."""

from __future__ import annotations

import base64
import json
import secrets
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from jitgate.devstack.aws import Stack
from jitgate.devstack.gateway import Gateway
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import secret_id
from jitgate.devstack.upstream import Upstream
from tests.e2e.conftest import (
    aws_stack,
    broker,
    broker_process,
    mint,
    moto_server,
    oidc_issuer,
    policy_path,
    test_policy,
)
from tests.reliability.harness import full_gateway, write_policy

__all__ = [
    "aws_stack", "broker", "broker_process", "mint", "moto_server", "oidc_issuer", "policy_path", "test_policy",
]


@dataclass
class Hostile:
    gateway: Gateway
    upstream: Upstream
    bundle: Path
    spool: Path
    gateway_id: str
    stack: Stack
    moto: str
    broker: str


@pytest.fixture(scope="module")
def hostile(
    tmp_path_factory: pytest.TempPathFactory, oidc_issuer: OidcIssuer, broker: str, aws_stack: Stack, moto_server: str
) -> Iterator[Hostile]:
    work = tmp_path_factory.mktemp("hostile")
    keys = [aws_stack.secrets[secret_id(n)] for n in ("cohere-test", "store-test")]
    with Upstream(api_keys=keys) as up:
        gateway_id = "hostile-" + secrets.token_hex(3)
        policy = write_policy(work, oidc_issuer.url, up)
        gw = full_gateway(
            work, policy=policy, upstream=up, broker=broker, stack=aws_stack, moto=moto_server, gateway_id=gateway_id,
            jitgate_max_inspect_bytes=str(1024 * 1024),
        )
        with gw:
            yield Hostile(gw, up, gw.client_bundle(work / "bundle.pem"), work / "spool", gateway_id, aws_stack,
                          moto_server, broker)
            if gw.proc.poll() is not None:
                pytest.fail("the gateway died:\n" + "\n".join(gw.log))


def connect(h: Hostile, token: str | None, target: str, *, timeout: float = 30) -> tuple[socket.socket, bytes]:
    """A CONNECT to `target` through the gateway (with `token` as proxy credentials, if any): the
    socket and the head of the gateway's answer."""
    sock = socket.create_connection(("127.0.0.1", h.gateway.port), timeout=timeout)
    auth = ""
    if token is not None:
        auth = "Proxy-Authorization: Basic " + base64.b64encode(f"jit:{token}".encode()).decode() + "\r\n"
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    return sock, head


def tunnel(
    h: Hostile, token: str | None, *, tls: bool = True, alpn: list[str] | None = None, timeout: float = 30,
    target: str = "127.0.0.1", server_name: str | None = "",
) -> socket.socket:
    """A CONNECT tunnel through the gateway to `target` at the upstream's port (with `token` as proxy
    credentials, if any), and TLS inside it to the gateway's CA unless `tls` is False; the ClientHello
    names `server_name` ("": the target; None: no name at all)."""
    sock, head = connect(h, token, f"{target}:{h.upstream.port}", timeout=timeout)
    assert b" 200 " in head.split(b"\r\n", 1)[0], head
    if not tls:
        return sock
    ctx = ssl.create_default_context(cafile=str(h.bundle))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if server_name is None:
        ctx.check_hostname = False  # nothing to check a certificate against
    return ctx.wrap_socket(sock, server_hostname=target if server_name == "" else server_name)


def answer_of(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """What comes back until the gateway closes, or until `timeout` passes in silence."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ssl.SSLError, ConnectionResetError):
        pass
    return data


def status_and_code(answer: bytes) -> tuple[int, str | None]:
    """The status of a raw HTTP/1 answer and the `code` of its JSON body (None: no such body)."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        return status, json.loads(body)["code"]
    except (ValueError, KeyError):
        return status, None
