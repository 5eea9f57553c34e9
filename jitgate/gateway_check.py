"""Before `jitgate run` mints: is the gateway there, would the job trust it, does it trust this broker?

A job started against a gateway that is down, that a wrong `--gateway-ca` makes untrusted, or
that verifies another broker's tokens fails inside the job with a bare `ConnectError`, a TLS
error or `invalid_token`, after a token was minted for nothing (issue 25, item 5). So the CLI
asks first, the way the job will reach the gateway:

- HTTP dialects: a request through the proxy, in a CONNECT tunnel, to `PROBE_HOST`, a name under
  the reserved `.invalid` domain that no upstream has. The gateway answers it itself
  (addon/gateway_probe.py) before any token is asked for, with the issuer and key ids it verifies
  tokens with; the TLS inside the tunnel is verified against the job's CA bundle. Trust in the
  broker means the gateway holds at least one of the broker's JWKS key ids.
- Postgres: an SSLRequest to the gateway's listener, then TLS verified against the same bundle.

Each failure is one jitgate error whose message says what is wrong and what to set; nothing in it
comes from the gateway's answer beyond the issuer URL it names.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from jitgate.errors import GatewayUnreachable, GatewayUntrusted

PROBE_HOST = "probe.jitgate.invalid"
PROBE_PATH = "/.well-known/jitgate-gateway"
PROBE_KIND = "jitgate-gateway"
_SSL_REQUEST = struct.pack("!ii", 8, 80877103)


@dataclass(frozen=True)
class ProbeAnswer:
    """What a gateway says of itself: the broker URL it trusts (`iss`) and the key ids it holds."""

    issuer: str
    kids: frozenset[str]
    keys_loaded: bool

    def to_json(self) -> dict[str, Any]:
        return {"kind": PROBE_KIND, "issuer": self.issuer, "kids": sorted(self.kids), "keys_loaded": self.keys_loaded}

    @classmethod
    def from_json(cls, data: Any) -> ProbeAnswer | None:
        if not isinstance(data, dict) or data.get("kind") != PROBE_KIND:
            return None
        kids, issuer = data.get("kids"), data.get("issuer")
        if not isinstance(kids, list) or not all(isinstance(k, str) for k in kids) or not isinstance(issuer, str):
            return None
        return cls(issuer, frozenset(kids), data.get("keys_loaded") is True)


def verdict(answer: ProbeAnswer, broker_kids: Collection[str], *, gateway: str, broker: str) -> None:
    """Raise GatewayUntrusted unless the gateway verifies tokens with a key of this broker."""
    if not answer.keys_loaded:
        raise GatewayUntrusted(
            f"the gateway at {gateway} has not loaded its broker's keys (it trusts {answer.issuer}): "
            "it would refuse every token; check that it reaches its broker"
        )
    if not answer.kids & frozenset(broker_kids):
        raise GatewayUntrusted(
            f"the gateway at {gateway} does not trust the broker at {broker}: it verifies tokens of "
            f"{answer.issuer}; use that broker (JITGATE_BROKER_URL) or the gateway of this one (JITGATE_GATEWAY)"
        )


def _ssl_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _untrusted_ca(gateway: str, ca_file: Path) -> GatewayUntrusted:
    return GatewayUntrusted(
        f"the gateway at {gateway} presented a certificate that the CA in {ca_file} did not sign: "
        "the job would refuse it; set --gateway-ca (JITGATE_GATEWAY_CA) to this gateway's CA"
    )


def probe_http(gateway: str, ca_bundle: Path, *, ca_file: Path, timeout: float = 5.0) -> ProbeAnswer:
    """Ask the gateway at `gateway` (host:port) about itself, through a tunnel as a job would."""
    context = ssl.create_default_context(cafile=str(ca_bundle))
    try:
        with httpx.Client(proxy=f"http://{gateway}", verify=context, timeout=timeout, trust_env=False) as http:
            resp = http.get(f"https://{PROBE_HOST}{PROBE_PATH}")
    except httpx.HTTPError as exc:
        if _ssl_failure(exc):
            raise _untrusted_ca(gateway, ca_file) from None
        raise GatewayUnreachable(
            f"nothing answers as a gateway at {gateway} ({type(exc).__name__}): is it running? "
            "set --gateway (JITGATE_GATEWAY) to its host:port"
        ) from None
    try:
        answer = ProbeAnswer.from_json(resp.json())
    except ValueError:
        answer = None
    if resp.status_code != 200 or answer is None:
        raise GatewayUnreachable(
            f"what answers at {gateway} is no jitgate gateway, or one too old to answer the probe "
            f"(HTTP {resp.status_code}); use --no-check-gateway to skip the check"
        )
    return answer


def check_pg(pg_gateway: str, ca_bundle: Path, *, ca_file: Path, timeout: float = 5.0) -> None:
    """An SSLRequest to the gateway's Postgres listener, then TLS verified as libpq's verify-full would."""
    host, _, port = pg_gateway.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise GatewayUnreachable("the gateway's Postgres listener must be HOST:PORT (--pg-gateway)")
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as exc:
        raise GatewayUnreachable(
            f"nothing listens at {pg_gateway} ({exc.strerror or type(exc).__name__}): is the gateway's Postgres "
            "listener on? set --pg-gateway (JITGATE_PG_GATEWAY) to its host:port"
        ) from None
    with sock:
        try:
            sock.sendall(_SSL_REQUEST)
            reply = sock.recv(1)
        except OSError:
            reply = b""
        if reply != b"S":
            raise GatewayUnreachable(f"what answers at {pg_gateway} is no jitgate Postgres listener (no TLS offered)")
        context = ssl.create_default_context(cafile=str(ca_bundle))
        try:
            with context.wrap_socket(sock, server_hostname=host):
                pass
        except ssl.SSLError:
            raise _untrusted_ca(pg_gateway, ca_file) from None
        except OSError:
            raise GatewayUnreachable(f"the listener at {pg_gateway} closed the connection during TLS") from None
