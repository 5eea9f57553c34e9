"""One full gateway (every addon) for the hostile-input tests, on the e2e session's real parts."""

from __future__ import annotations

import base64
import json
import random
import secrets
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from jitgate.devstack.aws import Stack
from jitgate.devstack.chroma import ChromaServer
from jitgate.devstack.gateway import Gateway
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import secret_id
from jitgate.devstack.upstream import Upstream
from jitgate.records import iso_ts
from tests.e2e.conftest import (
    aws_stack,
    broker,
    broker_process,
    chroma_server,
    mint,
    moto_server,
    oidc_issuer,
    policy_path,
    test_policy,
)
from tests.reliability.harness import (
    FaultyUpstream,
    client,
    full_gateway,
    raw_record_bytes,
    records,
    wait_for,
    write_policy,
)

__all__ = [
    "aws_stack", "broker", "broker_process", "chroma_server", "mint", "moto_server", "oidc_issuer", "policy_path",
    "test_policy",
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
    # voyage-test's sample upstream, at `localhost` (the upstream CA's other name), and the real
    # Chroma behind chroma-dev; None where a test's own gateway has neither.
    voyage: Upstream | None = None
    chroma: ChromaServer | None = None


@pytest.fixture(scope="module")
def hostile(
    tmp_path_factory: pytest.TempPathFactory, oidc_issuer: OidcIssuer, broker: str, aws_stack: Stack, moto_server: str,
    chroma_server: ChromaServer,
) -> Iterator[Hostile]:
    work = tmp_path_factory.mktemp("hostile")
    keys = [aws_stack.secrets[secret_id(n)] for n in ("cohere-test", "voyage-test")]
    with Upstream(api_keys=keys) as up, Upstream(api_keys=keys, ca=up.ca, dialect="voyage") as voyage:
        gateway_id = "hostile-" + secrets.token_hex(3)
        policy = write_policy(work, oidc_issuer.url, up, upstreams={
            "voyage-test": f"https://localhost:{voyage.port}", "chroma-dev": chroma_server.url,
        })
        gw = full_gateway(
            work, policy=policy, upstream=up, broker=broker, stack=aws_stack, moto=moto_server, gateway_id=gateway_id,
            jitgate_max_inspect_bytes=str(1024 * 1024),
        )
        with gw:
            yield Hostile(gw, up, gw.client_bundle(work / "bundle.pem"), work / "spool", gateway_id, aws_stack,
                          moto_server, broker, voyage, chroma_server)
            if gw.proc.poll() is not None:
                pytest.fail("the gateway died:\n" + "\n".join(gw.log))


def connect(
    h: Hostile | Scripted, token: str | None, target: str, *, timeout: float = 30
) -> tuple[socket.socket, bytes]:
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
    h: Hostile | Scripted, token: str | None, *, tls: bool = True, alpn: list[str] | None = None, timeout: float = 30,
    target: str = "127.0.0.1", server_name: str | None = "", port: int | None = None,
) -> socket.socket:
    """A CONNECT tunnel through the gateway to `target` at `port` (default: the upstream's; with
    `token` as proxy credentials, if any), and TLS inside it to the gateway's CA unless `tls` is
    False; the ClientHello names `server_name` ("": the target; None: no name at all)."""
    sock, head = connect(h, token, f"{target}:{port or h.upstream.port}", timeout=timeout)
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


# -- a gateway before an upstream scripted to answer anything (FaultyUpstream "script") ------------

_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
RERANK = {"model": "rerank-v3.5", "query": "q", "documents": ["a", "b"]}


def aws_key() -> str:
    return "AKIA" + "".join(random.SystemRandom().choice(_B32) for _ in range(16))


def escaped(text: str) -> str:
    return f"\\u{ord(text[0]):04x}" + text[1:]


@dataclass
class Scripted:
    gateway: Gateway
    upstream: FaultyUpstream
    bundle: Path
    spool: Path
    gateway_id: str
    stack: Stack
    moto: str

    def record_bytes(self) -> bytes:
        return raw_record_bytes(self.moto, self.stack.bucket, self.gateway_id, self.spool)

    def snapshot(self) -> tuple[set[str], str]:
        """The records so far, and when: a late record of an earlier test is no new one."""
        ids = {r["record_id"] for r in records(self.moto, self.stack.bucket, self.gateway_id, self.spool)}
        return ids, iso_ts(time.time() - 0.05)

    def new_records(self, before: tuple[set[str], str], want: int) -> list[dict[str, Any]]:
        """The `want` records written since `before` (a snapshot), oldest first (waits for them)."""
        known, since = before
        found: list[dict[str, Any]] = []

        def enough() -> bool:
            every = records(self.moto, self.stack.bucket, self.gateway_id, self.spool)
            fresh = (r for r in every if r["record_id"] not in known and r["ts"] >= since)
            found[:] = sorted({r["record_id"]: r for r in fresh}.values(), key=lambda r: r["ts"])
            return len(found) >= want

        assert wait_for(enough, 20), (want, len(found))
        return found


@pytest.fixture(scope="module")
def scripted(
    tmp_path_factory: pytest.TempPathFactory, oidc_issuer: OidcIssuer, broker: str, aws_stack: Stack, moto_server: str
) -> Iterator[Scripted]:
    work = tmp_path_factory.mktemp("bypasses")
    up = FaultyUpstream(trustme.CA(), "script")
    gateway_id = "bypass-" + secrets.token_hex(3)
    policy = write_policy(work, oidc_issuer.url, up)  # type: ignore[arg-type]
    gw = full_gateway(
        work, policy=policy, upstream=up, broker=broker, stack=aws_stack, moto=moto_server,  # type: ignore[arg-type]
        gateway_id=gateway_id, jitgate_max_inspect_bytes=str(1024 * 1024),
    )
    try:
        with gw:
            yield Scripted(gw, up, gw.client_bundle(work / "bundle.pem"), work / "spool", gateway_id, aws_stack,
                           moto_server)
            assert gw.proc.poll() is None, "\n".join(gw.log)
    finally:
        up.close()


@pytest.fixture(scope="module")
def token(mint: Callable[..., dict[str, Any]]) -> str:
    value: str = mint("cohere-test")["token"]
    return value


@pytest.fixture
def c(scripted: Scripted, token: str) -> Iterator[httpx.Client]:
    """An httpx client through the scripted gateway with `token` (test_bodies has its own, through `hostile`)."""
    with client(scripted.gateway, scripted.bundle, token) as cl:
        yield cl
