"""`jitgate run`'s gateway check (issue 25, item 5): the verdict on a probe answer, and the
Postgres check against real sockets and real TLS."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest
import trustme

from jitgate.errors import GatewayUnreachable, GatewayUntrusted
from jitgate.gateway_check import PROBE_KIND, ProbeAnswer, check_pg, verdict


def test_verdict_needs_a_shared_key_id() -> None:
    ok = ProbeAnswer("https://broker.example", frozenset({"k1", "k2"}), True)
    verdict(ok, ["k2", "k3"], gateway="g:1", broker="https://broker.example")
    mismatch = r"does not trust the broker at https://other\.example: it verifies tokens of https://broker\.example"
    with pytest.raises(GatewayUntrusted, match=mismatch):
        verdict(ok, ["k3"], gateway="g:1", broker="https://other.example")
    with pytest.raises(GatewayUntrusted, match="has not loaded"):
        verdict(ProbeAnswer("https://b", frozenset({"k1"}), False), ["k1"], gateway="g:1", broker="https://b")


@pytest.mark.parametrize(
    "data",
    [None, [], {"kind": "other", "issuer": "i", "kids": []}, {"kind": PROBE_KIND, "issuer": 1, "kids": []},
     {"kind": PROBE_KIND, "issuer": "i", "kids": [1]}, {"kind": PROBE_KIND, "issuer": "i"}],
)
def test_anything_else_is_no_probe_answer(data: object) -> None:
    assert ProbeAnswer.from_json(data) is None


def test_probe_answer_round_trips() -> None:
    answer = ProbeAnswer("https://b", frozenset({"b", "a"}), True)
    assert ProbeAnswer.from_json(answer.to_json()) == answer and answer.to_json()["kids"] == ["a", "b"]


def _listener(reply: bytes, ca: trustme.CA | None) -> tuple[socket.socket, int]:
    """A one-connection server on loopback: answers the SSLRequest with `reply`, then TLS with `ca`'s cert."""
    server = socket.create_server(("127.0.0.1", 0))

    def _serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(8)
            conn.sendall(reply)
            if ca is not None and reply == b"S":
                context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                ca.issue_cert("127.0.0.1").configure_cert(context)
                try:
                    with context.wrap_socket(conn, server_side=True):
                        pass
                except OSError:  # the client refused the certificate (SSLError is an OSError)
                    pass

    threading.Thread(target=_serve, daemon=True).start()
    return server, server.getsockname()[1]


def test_pg_check_against_real_sockets(tmp_path: Path) -> None:
    ca, other = trustme.CA(), trustme.CA()
    bundle = tmp_path / "bundle.pem"
    ca.cert_pem.write_to_path(str(bundle))
    server, port = _listener(b"S", ca)
    with server:
        check_pg(f"127.0.0.1:{port}", bundle, ca_file=bundle)
    server, port = _listener(b"S", other)
    with server, pytest.raises(GatewayUntrusted, match="did not sign"):
        check_pg(f"127.0.0.1:{port}", bundle, ca_file=bundle)
    server, port = _listener(b"N", None)
    with server, pytest.raises(GatewayUnreachable, match="no jitgate Postgres listener"):
        check_pg(f"127.0.0.1:{port}", bundle, ca_file=bundle)
    free = socket.create_server(("127.0.0.1", 0))
    closed_port = free.getsockname()[1]
    free.close()
    with pytest.raises(GatewayUnreachable, match="nothing listens"):
        check_pg(f"127.0.0.1:{closed_port}", bundle, ca_file=bundle)
    with pytest.raises(GatewayUnreachable, match="HOST:PORT"):
        check_pg("no-port", bundle, ca_file=bundle)
