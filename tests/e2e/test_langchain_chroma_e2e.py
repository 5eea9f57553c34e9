"""LangChain's Chroma vector store (`langchain-chroma`) on the real Chroma server through a real gateway.

The store goes through the gateway as chromadb's own client does (HTTP_PROXY, the JIT token as
`x-chroma-token`): a reader's `similarity_search`, a maintainer's `add_texts` (an upsert). LangChain
always asks Chroma for metadatas, so the reader's grant here names one metadata key
(`metadatas.source`): its documents come back with that key and never `owner_email`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import chromadb
import httpx
import pytest
import yaml
from chromadb.config import Settings
from langchain_chroma import Chroma
from langchain_core.embeddings import Embeddings

from jitgate.devstack.aws import Stack, local_broker
from jitgate.devstack.chroma import SEED, ChromaServer, collection_path, embedding
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import CHROMA_CONNECTION, CI_CLAIMS, MAINTAINER_SUB, READER_SUB, policy_dict
from tests.e2e.gateway import Gateway, jitgate_options, start_gateway

REPO = Path(__file__).resolve().parents[2]
READER_FIELDS = ["ids", "documents", "distances", "metadatas.source"]


class SeedEmbeddings(Embeddings):
    """The embedding `candidates` was seeded with (jitgate.devstack.chroma.embedding), dimension 8."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [embedding(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return embedding(text)


@pytest.fixture(scope="module")
def lc_policy(tmp_path_factory: pytest.TempPathFactory, chroma_server: ChromaServer, oidc_issuer: OidcIssuer) -> Path:
    """The dev policy on the real Chroma, the reader's grant with one metadata key more for LangChain."""
    doc: Any = policy_dict(oidc_issuer.url, upstreams={CHROMA_CONNECTION: chroma_server.url})
    (reader,) = (g for g in doc["grants"] if g["name"] == "chroma-readers")
    reader["fields"] = READER_FIELDS
    path = tmp_path_factory.mktemp("langchain-policy") / "policy.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def lc_broker(aws_stack: Stack, lc_policy: Path) -> Iterator[str]:
    """This module's broker: its tokens carry the grant above (the gateway cuts by the token's scope)."""
    with local_broker(aws_stack, lc_policy, cwd=REPO) as proc:
        yield proc.url


@pytest.fixture(scope="module")
def lc_gateway(
    tmp_path_factory: pytest.TempPathFactory, lc_policy: Path, lc_broker: str, aws_stack: Stack, moto_server: str,
) -> Iterator[Gateway]:
    work = tmp_path_factory.mktemp("langchain-gateway")
    options = jitgate_options(policy=lc_policy, jwks_url=f"{lc_broker}/.well-known/jwks.json", table=aws_stack.table,
                              aws_endpoint=moto_server, region=aws_stack.region)
    options["jitgate_spool_dir"] = str(work / "spool")
    with start_gateway(work, options=options) as gw:
        yield gw
        if gw.proc.poll() is not None:
            pytest.fail("the gateway died:\n" + "\n".join(gw.log))


def _mint(broker: str, issuer: OidcIssuer, sub: str) -> str:
    resp = httpx.post(f"{broker}/v1/tokens", json={"connection": CHROMA_CONNECTION}, timeout=10, trust_env=False,
                      headers={"Authorization": f"Bearer {issuer.mint(sub, CI_CLAIMS)}"})
    assert resp.status_code == 201, resp.text
    token: str = resp.json()["token"]
    return token


@pytest.fixture
def store(
    lc_gateway: Gateway, lc_broker: str, oidc_issuer: OidcIssuer, chroma_server: ChromaServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., Chroma]:
    """store(sub, token=None) -> LangChain's Chroma on `candidates` through the gateway, as `sub`."""
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("ANONYMIZED_TELEMETRY", "False")

    def _store(sub: str, **kw: Any) -> Chroma:
        token = _mint(lc_broker, oidc_issuer, sub)
        monkeypatch.setenv("HTTP_PROXY", lc_gateway.url)
        port = int(chroma_server.url.rsplit(":", 1)[1])
        client = chromadb.HttpClient(host="127.0.0.1", port=port, ssl=False, headers={"x-chroma-token": token},
                                     settings=Settings(anonymized_telemetry=False))
        return Chroma(client=client, collection_name="candidates", embedding_function=SeedEmbeddings(), **kw)

    return _store


def test_a_readers_similarity_search_sees_documents_and_only_the_granted_metadata_key(
    store: Callable[..., Chroma],
) -> None:
    # A reader may not create: LangChain's get-or-create would be refused, so it only gets.
    reader = store(READER_SUB, create_collection_if_not_exists=False)
    (doc, distance), *_ = reader.similarity_search_with_score(SEED[0][1], k=3)
    assert doc.id == "c1" and doc.page_content == SEED[0][1] and distance == pytest.approx(0.0, abs=1e-5)
    assert doc.metadata == {"source": SEED[0][2]}  # never owner_email
    hits = reader.similarity_search(SEED[2][1], k=1)
    assert [h.id for h in hits] == ["c3"]
    assert "jane.doe@example.com" not in hits[0].page_content  # masked on its way back
    with pytest.raises(Exception, match="operation_not_allowed"):
        reader.add_texts(["a reader may not write"], ids=["r-" + uuid.uuid4().hex[:8]])


def test_a_maintainers_add_texts_lands_in_chroma_and_the_reader_finds_it(
    store: Callable[..., Chroma], chroma_server: ChromaServer,
) -> None:
    ids = ["lc-" + uuid.uuid4().hex[:8] for _ in range(2)]
    texts = [f"LangChain loaded candidate {i} about ranking pipelines" for i in ids]
    maintainer = store(MAINTAINER_SUB)
    try:
        assert maintainer.add_texts(texts, ids=ids, metadatas=[
            {"source": "langchain", "owner_email": "loader.7@example.com"}, {"source": "langchain"},
        ]) == ids
        with httpx.Client(base_url=chroma_server.url, timeout=30, trust_env=False) as direct:
            col = direct.get(f"{collection_path()}/candidates").json()["id"]
            got = direct.post(f"{collection_path()}/{col}/get", json={"ids": ids, "include": ["documents",
                                                                                           "metadatas"]}).json()
        assert dict(zip(got["ids"], got["documents"], strict=True)) == dict(zip(ids, texts, strict=True))
        assert {m["source"] for m in got["metadatas"]} == {"langchain"}
        reader = store(READER_SUB, create_collection_if_not_exists=False)
        (hit,) = reader.similarity_search(texts[0], k=1)
        assert hit.id == ids[0] and hit.page_content == texts[0] and hit.metadata == {"source": "langchain"}
    finally:
        with httpx.Client(base_url=chroma_server.url, timeout=30, trust_env=False) as direct:
            col = direct.get(f"{collection_path()}/candidates").json()["id"]
            direct.post(f"{collection_path()}/{col}/delete", json={"ids": ids}).raise_for_status()
