"""The real Chroma server (`chroma run`) and the real `chromadb.HttpClient` through a real gateway.

The client goes through the gateway as a job would: HTTP_PROXY (Chroma listens on plain HTTP on
loopback) and the JIT token as its key header (`x-chroma-token`, what CHROMA_API_KEY holds under
`jitgate run`). No stand-in: every path, body and answer is Chroma 1.x's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import chromadb
import pytest
import yaml
from chromadb.config import Settings

from jitgate.devstack.aws import Stack
from jitgate.devstack.chroma import ChromaServer
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import CHROMA_CONNECTION, MAINTAINER_SUB, READER_SUB, policy_dict
from tests.e2e.gateway import Gateway, jitgate_options, start_gateway


@pytest.fixture(scope="module")
def chroma_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    chroma_server: ChromaServer,
    oidc_issuer: OidcIssuer,
    broker: str,
    aws_stack: Stack,
    moto_server: str,
) -> Iterator[Gateway]:
    work = tmp_path_factory.mktemp("chroma-gateway")
    policy = work / "policy.yaml"
    doc = policy_dict(oidc_issuer.url, upstreams={CHROMA_CONNECTION: chroma_server.url})
    policy.write_text(yaml.safe_dump(doc, sort_keys=False))
    options = jitgate_options(
        policy=policy, jwks_url=f"{broker}/.well-known/jwks.json", table=aws_stack.table,
        aws_endpoint=moto_server, region=aws_stack.region,
    )
    with start_gateway(work, options=options) as gw:
        yield gw
        if gw.proc.poll() is not None:
            pytest.fail("the gateway died:\n" + "\n".join(gw.log))


@pytest.fixture
def chroma_client(
    chroma_gateway: Gateway, chroma_server: ChromaServer, mint: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> Callable[[str], Any]:
    """chroma_client(sub) -> a chromadb.HttpClient through the gateway with a fresh token for `sub`."""
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("ANONYMIZED_TELEMETRY", "False")

    def _client(sub: str) -> Any:
        monkeypatch.delenv("HTTP_PROXY", raising=False)  # the broker is reached directly
        token = mint(CHROMA_CONNECTION, sub=sub)["token"]
        monkeypatch.setenv("HTTP_PROXY", chroma_gateway.url)
        return chromadb.HttpClient(
            host="127.0.0.1", port=chroma_server.port, ssl=False, headers={"x-chroma-token": token},
            settings=Settings(anonymized_telemetry=False),
        )

    return _client



def test_the_real_client_queries_through_the_gateway_as_reader(chroma_client: Callable[[str], Any]) -> None:
    client = chroma_client(READER_SUB)
    col = client.get_collection("candidates")
    got = col.query(query_embeddings=[[0.5] * 8], n_results=3, include=["documents", "distances"])
    assert len(got["ids"][0]) == 3 and len(got["documents"][0]) == 3



def test_the_real_client_adds_through_the_gateway_as_maintainer(chroma_client: Callable[[str], Any]) -> None:
    client = chroma_client(MAINTAINER_SUB)
    col = client.get_collection("candidates")
    col.add(ids=["m1"], documents=["added by the maintainer"], embeddings=[[0.25] * 8])
    assert col.get(ids=["m1"])["documents"] == ["added by the maintainer"]
