"""The `client` of a record is the job's own address: what the NLB keeps (client IP preservation)
is what the gateway writes down.

The template half: the target group keeps the client's address and does not wrap connections in
the PROXY protocol (mitmproxy reads none: the first bytes would be taken for a request). The
process half: a real gateway, connections from loopback addresses other than the gateway's own
(127.0.0.2, 127.0.0.3: all of 127/8 is loopback here), and the record of each names that address
and the connection's source port, for a refused tunnel and for an answered rerank.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import urllib3
from cfnlint.decode import decode

from jitgate.devstack.aws import Stack
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import secret_id
from jitgate.devstack.upstream import Upstream
from tests.reliability.harness import DOCS, QUERY, full_gateway, records, wait_for, write_policy

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "gateway" / "gateway.yaml"


def test_the_target_group_keeps_the_client_address_and_adds_no_proxy_protocol() -> None:
    template, matches = decode(str(TEMPLATE))
    assert not matches and template is not None
    tg = template["Resources"]["TargetGroup"]["Properties"]
    attrs = {a["Key"]: a["Value"] for a in tg["TargetGroupAttributes"]}
    assert (tg["Protocol"], tg["TargetType"]) == ("TCP", "ip")
    assert attrs["preserve_client_ip.enabled"] == "true"
    assert attrs.get("proxy_protocol_v2.enabled", "false") == "false"


def test_the_record_names_the_peer_address_and_port(
    tmp_path: Path, aws_stack: Stack, moto_server: str, broker: str, oidc_issuer: OidcIssuer,
    mint: Callable[..., dict[str, Any]],
) -> None:
    gateway_id = "client-addr-" + secrets.token_hex(3)
    with Upstream(api_keys=[aws_stack.secrets[secret_id("cohere-test")]]) as up:
        gw = full_gateway(
            tmp_path, policy=write_policy(tmp_path, oidc_issuer.url, up), upstream=up, broker=broker,
            stack=aws_stack, moto=moto_server, gateway_id=gateway_id,
        )
        with gw:
            # A tunnel to a host no policy names, from 127.0.0.2: refused and recorded.
            with socket.socket() as raw:
                raw.bind(("127.0.0.2", 0))
                raw.connect(("127.0.0.1", gw.port))
                refused_from = f"127.0.0.2:{raw.getsockname()[1]}"
                raw.sendall(b"CONNECT api.cohere.test:443 HTTP/1.1\r\nHost: api.cohere.test:443\r\n\r\n")
                head = raw.recv(64)
                assert head.startswith(b"HTTP/1.1 4"), "\n".join(gw.log)
                refused = int(head.split()[1])
            # An answered rerank, from 127.0.0.3.
            marker = "addr" + secrets.token_hex(4)
            # (urllib3, not httpx: httpx does not bind a proxied connection to its local_address.)
            token = mint("cohere-test")["token"]
            proxied = urllib3.ProxyManager(
                gw.url, proxy_headers=urllib3.make_headers(proxy_basic_auth=f"jit:{token}"),
                source_address=("127.0.0.3", 0), ca_certs=str(gw.client_bundle(tmp_path / "bundle.pem")),
            )
            body = {"model": "rerank-v3.5", "query": f"{marker} {QUERY}", "documents": DOCS}
            answer = proxied.request("POST", f"{up.url}/v2/rerank", json=body,
                                     headers={"Authorization": "Bearer placeholder"}, timeout=30)
            assert answer.status == 200, "\n".join(gw.log)
            proxied.clear()

            def mine() -> list[dict[str, Any]]:
                return [r for r in records(moto_server, aws_stack.bucket, gateway_id, tmp_path / "spool")
                        if r.get("client") == refused_from or marker in str(r.get("rerank_query"))]

            assert wait_for(lambda: len(mine()) == 2, 30), "\n".join(gw.log)
    by_status = {r["status"]: r["client"] for r in mine()}
    assert by_status[refused] == refused_from
    host, _, port = by_status[200].rpartition(":")
    assert host == "127.0.0.3" and 0 < int(port) < 65536 and int(port) != gw.port
