"""The real Chroma server (`chroma run`) and the real `chromadb.HttpClient` through a real gateway.

The client goes through the gateway as a job would: HTTP_PROXY (Chroma listens on plain HTTP on
loopback) and the JIT token as its key header (`x-chroma-token`, what CHROMA_API_KEY holds under
`jitgate run`). No stand-in: every path, body and answer is Chroma 1.x's own. The module's
gateway keeps its session records in a spool directory; the last tests read them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import chromadb
import httpx
import pytest
import yaml
from chromadb.config import Settings
from typer.testing import CliRunner

from jitgate.cli import _register, app
from jitgate.devstack.aws import Stack
from jitgate.devstack.chroma import SEED, ChromaServer, base64_embedding, collection_path, embedding
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import (
    ADMIN_GROUP,
    CHROMA_CONNECTION,
    MAINTAINER_SUB,
    READER_SUB,
    policy_dict,
    secret_id,
)
from tests.e2e.background import Background
from tests.e2e.gateway import Gateway, jitgate_options, start_gateway
from tests.relay import Relay, relay_to

if not any(g.name == "approvals" for g in app.registered_groups):
    _register()
runner = CliRunner()
SPOOL: dict[str, Path] = {}
# Text of the seed that must never reach a record raw: e-mail addresses and the phone number.
PII = ("jane.doe@example.com", "ana@example.com", "bob@example.org", "415 555 0132", "loader.42@example.com")


def _direct(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30, trust_env=False)


@pytest.fixture(scope="module")
def front(chroma_server: ChromaServer) -> Iterator[Relay]:
    """A TCP relay in front of Chroma that keeps what it received: the connection's upstream."""
    with relay_to(chroma_server.url, record=True) as relay:
        yield relay


@pytest.fixture(scope="module")
def chroma_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    front: Relay,
    oidc_issuer: OidcIssuer,
    broker: str,
    aws_stack: Stack,
    moto_server: str,
) -> Iterator[Gateway]:
    work = tmp_path_factory.mktemp("chroma-gateway")
    policy = work / "policy.yaml"
    doc = policy_dict(oidc_issuer.url, upstreams={CHROMA_CONNECTION: front.url})
    policy.write_text(yaml.safe_dump(doc, sort_keys=False))
    options = jitgate_options(
        policy=policy, jwks_url=f"{broker}/.well-known/jwks.json", table=aws_stack.table,
        aws_endpoint=moto_server, region=aws_stack.region,
    )
    SPOOL["dir"] = work / "spool"
    options |= {"jitgate_spool_dir": str(SPOOL["dir"]), "jitgate_approval_timeout": "60",
                "jitgate_approval_poll": "0.2"}
    with start_gateway(work, options=options) as gw:
        yield gw
        if gw.proc.poll() is not None:
            pytest.fail("the gateway died:\n" + "\n".join(gw.log))


@pytest.fixture
def chroma_client(
    chroma_gateway: Gateway, front: Relay, mint: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> Callable[[str], Any]:
    """chroma_client(sub) -> a chromadb.HttpClient through the gateway with a fresh token for `sub`."""
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("ANONYMIZED_TELEMETRY", "False")

    def _client(sub: str, **kw: Any) -> Any:
        monkeypatch.delenv("HTTP_PROXY", raising=False)  # the broker is reached directly
        token = mint(CHROMA_CONNECTION, sub=sub)["token"]
        monkeypatch.setenv("HTTP_PROXY", chroma_gateway.url)
        return chromadb.HttpClient(
            host="127.0.0.1", port=front.port, ssl=False, headers={"x-chroma-token": token},
            settings=Settings(anonymized_telemetry=False), **kw,
        )

    return _client


@pytest.fixture
def raw(
    chroma_gateway: Gateway, front: Relay, mint: Callable[..., dict[str, Any]]
) -> Callable[[str], httpx.Client]:
    """raw(sub) -> an httpx client through the gateway with a fresh token for `sub` as its key header."""

    def _raw(sub: str) -> httpx.Client:
        token = mint(CHROMA_CONNECTION, sub=sub)["token"]
        return httpx.Client(base_url=front.url, proxy=chroma_gateway.url, timeout=60, trust_env=False,
                            headers={"x-chroma-token": token})

    return _raw


def _refused(exc: pytest.ExceptionInfo[BaseException], code: str) -> None:
    assert f'"code": "{code}"' in str(exc.value), str(exc.value)



def test_reader_every_granted_call_of_the_real_client(chroma_client: Callable[..., Any]) -> None:
    client = chroma_client(READER_SUB)  # the constructor: identity, tenant and database lookups
    assert client.heartbeat() > 0
    assert client.get_version()
    col = client.get_collection("candidates")
    assert col.name == "candidates" and col.count() >= len(SEED)
    got = col.get(ids=["c1", "c3"], include=["documents", "metadatas", "embeddings"])
    assert sorted(got["ids"]) == ["c1", "c3"] and len(got["documents"]) == 2
    assert got["metadatas"] is None  # fields: ids, documents, distances
    assert got["embeddings"] is None or got["embeddings"].tolist() is None
    near = col.query(query_embeddings=[embedding(SEED[0][1])], n_results=3,
                     include=["documents", "distances", "metadatas"])
    assert near["ids"][0][0] == "c1" and near["distances"][0][0] == pytest.approx(0.0, abs=1e-5)
    assert near["metadatas"] is None
    assert "jane.doe@example.com" not in json.dumps(col.get(ids=["c3"])["documents"])  # masked answer


def test_reader_outside_its_scope_is_refused(chroma_client: Callable[..., Any], chroma_server: ChromaServer) -> None:
    with _direct(chroma_server.url) as direct:
        direct.post(collection_path(), json={"name": "secrets", "get_or_create": True}).raise_for_status()
    client = chroma_client(READER_SUB)
    col = client.get_collection("candidates")
    with pytest.raises(Exception) as exc:
        col.add(ids=["r1"], documents=["no"], embeddings=[[0.1] * 8])
    _refused(exc, "operation_not_allowed")
    with pytest.raises(Exception) as exc:
        client.get_collection("secrets")
    _refused(exc, "collection_not_allowed")
    with pytest.raises(Exception) as exc:  # an oracle on a hidden metadata key
        col.get(where={"owner_email": "ana@example.com"})
    _refused(exc, "field_not_allowed")
    with pytest.raises(Exception) as exc:
        client.list_collections()
    _refused(exc, "operation_not_allowed")
    with pytest.raises(ValueError, match="other_tenant"):  # the client's own words for our 403
        chroma_client(READER_SUB, tenant="other_tenant", database="other_db")


def test_an_ungranted_collection_by_uuid_and_an_unknown_uuid_are_refused(
    raw: Callable[[str], httpx.Client], chroma_server: ChromaServer
) -> None:
    with _direct(chroma_server.url) as direct:
        secrets = direct.get(f"{collection_path()}/secrets").json()["id"]
        candidates = direct.get(f"{collection_path()}/candidates").json()["id"]
    with raw(READER_SUB) as c:
        # never seen by this gateway in an answer: it asks the store, then refuses by the name
        other = c.post(f"{collection_path()}/{secrets}/get", json={})
        assert (other.status_code, other.json()["code"]) == (403, "collection_not_allowed")
        unknown = c.post(f"{collection_path()}/{uuid.uuid4()}/get", json={})
        assert (unknown.status_code, unknown.json()["code"]) == (403, "collection_unresolved")
        junk = c.post(f"{collection_path()}/not-a-uuid/get", json={})
        assert (junk.status_code, junk.json()["code"]) == (403, "collection_unresolved")
        ok = c.post(f"{collection_path()}/{candidates}/get", json={"ids": ["c1"]})
        assert ok.status_code == 200 and ok.json()["ids"] == ["c1"]
        tenant = c.post(f"/api/v2/tenants/other_tenant/databases/other_db/collections/{candidates}/get", json={})
        assert (tenant.status_code, tenant.json()["code"]) == (403, "database_not_allowed")
        by_name = c.post(f"{collection_path()}/candidates/get", json={})  # Chroma takes ids only there
        assert by_name.json()["code"] == "collection_unresolved"


def test_maintainer_every_call_of_the_real_client(
    chroma_client: Callable[..., Any], chroma_server: ChromaServer
) -> None:
    client = chroma_client(MAINTAINER_SUB)
    assert [c.name for c in client.list_collections()] == ["candidates"]  # `secrets` exists, cut from the list
    with pytest.raises(Exception) as exc:
        client.create_collection("other")
    _refused(exc, "collection_not_allowed")
    col = client.get_or_create_collection("candidates")
    # chromadb 1.x sends these embeddings base64-encoded (pre-flight: supports_base64_encoding)
    col.add(ids=["m1", "m2"], documents=["added by the maintainer", "second"],
            embeddings=[[0.25] * 8, [0.75] * 8], metadatas=[{"source": "ops"}, {"source": "ops"}])
    col.upsert(ids=["m2"], documents=["second, upserted"], embeddings=[[0.7] * 8])
    # the maintainer's profile lets PII pass to the store (request_pii: allow); the record never holds it
    col.update(ids=["m1"], metadatas=[{"source": "ops", "owner_email": "loader.42@example.com"}])
    got = col.get(ids=["m1", "m2"], include=["documents", "metadatas"])
    assert got["metadatas"][got["ids"].index("m1")]["owner_email"] != "loader.42@example.com"  # answers: masked
    with _direct(chroma_server.url) as direct:
        stored = direct.post(f"{collection_path()}/{col.id}/get", json={"ids": ["m1"], "include": ["metadatas"]})
    assert stored.json()["metadatas"][0]["owner_email"] == "loader.42@example.com"  # as the profile allows
    assert dict(zip(got["ids"], got["documents"], strict=True)) == {"m1": "added by the maintainer",
                                                                    "m2": "second, upserted"}
    near = col.query(query_embeddings=[[0.7] * 8], n_results=1)  # float lists on query
    assert near["ids"] == [["m2"]]
    assert col.count() >= len(SEED) + 2


def test_base64_and_float_embeddings_on_add_and_query(
    raw: Callable[[str], httpx.Client], chroma_server: ChromaServer
) -> None:
    with _direct(chroma_server.url) as direct:
        cid = direct.get(f"{collection_path()}/candidates").json()["id"]
    with raw(MAINTAINER_SUB) as c:
        b64 = c.post(f"{collection_path()}/{cid}/add",
                     json={"ids": ["e1"], "embeddings": [base64_embedding([0.125] * 8)], "documents": ["b64"]})
        assert b64.status_code in (200, 201), b64.text
        flt = c.post(f"{collection_path()}/{cid}/add",
                     json={"ids": ["e2"], "embeddings": [[0.875] * 8], "documents": ["float"]})
        assert flt.status_code in (200, 201), flt.text
        near = c.post(f"{collection_path()}/{cid}/query",
                      json={"query_embeddings": [[0.125] * 8], "n_results": 1, "include": ["documents"]})
        assert near.json()["ids"] == [["e1"]]


def _hold_of(broker: str, approver: str, jti: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listed = runner.invoke(app, ["approvals", "list", "--json", "--broker", broker, "--oidc-token", approver])
        assert listed.exit_code == 0, listed.output
        for item in json.loads(listed.stdout):
            if item["kind"] == "hold" and item["summary"]["jti"] == jti:
                return dict(item)
        time.sleep(0.2)
    raise AssertionError("the hold never showed up")


def test_delete_is_held_approved_with_the_cli_then_executed(
    chroma_gateway: Gateway, chroma_server: ChromaServer, front: Relay, mint: Callable[..., dict[str, Any]],
    broker: str, oidc_issuer: OidcIssuer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with _direct(chroma_server.url) as direct:
        cid = direct.get(f"{collection_path()}/candidates").json()["id"]
        direct.post(f"{collection_path()}/{cid}/upsert",
                    json={"ids": ["d1"], "documents": ["to delete"], "embeddings": [[0.5] * 8]}).raise_for_status()
    minted = mint(CHROMA_CONNECTION, sub=MAINTAINER_SUB)
    monkeypatch.setenv("HTTP_PROXY", chroma_gateway.url)
    monkeypatch.setenv("NO_PROXY", "")
    client = chromadb.HttpClient(host="127.0.0.1", port=front.port, headers={"x-chroma-token": minted["token"]},
                                 settings=Settings(anonymized_telemetry=False))
    col = client.get_collection("candidates")
    monkeypatch.delenv("HTTP_PROXY")  # the client took its proxy when it was made; the CLI reaches the broker
    call = Background(lambda: col.delete(ids=["d1"]))
    admin = oidc_issuer.mint("sec-oncall", {"groups": [ADMIN_GROUP]})
    hold = _hold_of(broker, admin, minted["jti"])
    assert hold["summary"]["operation"] == "delete" and hold["summary"]["collection"] == "candidates"
    with _direct(chroma_server.url) as direct:
        still = direct.post(f"{collection_path()}/{cid}/get", json={"ids": ["d1"]}).json()
    assert still["ids"] == ["d1"]  # held: not executed yet
    decided = runner.invoke(app, ["approvals", "approve", hold["id"], "--reason", "cleanup",
                                  "--broker", broker, "--oidc-token", admin])
    assert decided.exit_code == 0, decided.output
    call.result()
    with _direct(chroma_server.url) as direct:
        gone = direct.post(f"{collection_path()}/{cid}/get", json={"ids": ["d1"]}).json()
    assert gone["ids"] == []


def _records() -> list[dict[str, Any]]:
    out = []
    for path in sorted(SPOOL["dir"].rglob("*.jsonl")):
        out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


def test_records_hold_no_raw_pii_nor_vectors_and_refusals_name_what_was_refused() -> None:
    deadline = time.monotonic() + 20
    records: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        records = [r for r in _records() if r["conn"] == CHROMA_CONNECTION]
        if any(r["operation"] == "delete" and r["decision"] == "approved" for r in records):
            break
        time.sleep(0.2)
    assert records
    text = json.dumps(records)
    for value in PII:
        assert value not in text
    assert base64_embedding([0.125] * 8) not in text and base64_embedding([0.25] * 8) not in text
    for r in records:
        for body in (r["request_body"], r["response_body"]):
            assert body is None or "0.875,0.875" not in body
    update = [r for r in records if r["operation"] == "update"]
    assert update and all(r["request_body"] is None for r in update)  # allowed PII: the body is withheld
    assert any(f["action"] == "allow" and f["type"] == "email" for r in update for f in r["findings"])
    adds = [r for r in records if r["operation"] == "add" and r["request_body"]]
    assert adds and all('"$vector"' in r["request_body"] for r in adds)
    refused = [r for r in records if r["error"] == "collection_not_allowed"]
    assert {(r["operation"], r["collection"]) for r in refused} >= {("get_collection", "secrets"),
                                                                    ("get", "secrets"),
                                                                    ("create_collection", "other")}
    add = [r for r in records if r["error"] == "operation_not_allowed" and r["operation"] == "add"]
    assert add and all((r["collection"], r["tenant"], r["database"]) == ("candidates", "default_tenant",
                                                                         "default_database") for r in add)
    other = [r for r in records if r["error"] == "database_not_allowed"]
    assert other and {(r["tenant"], r["database"]) for r in other} >= {("other_tenant", "other_db")}
    uuids = [r["collection"] for r in records if r["collection"]]
    assert all(not _is_uuid(c) for c in uuids)  # a record names the collection, never its id


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def test_the_store_got_the_real_credential_and_never_a_jit_token(
    chroma_client: Callable[..., Any], front: Relay, aws_stack: Stack
) -> None:
    mark = len(front.sent)
    client = chroma_client(READER_SUB)
    client.get_collection("candidates").count()
    sent = bytes(front.sent[mark:])
    real = aws_stack.secrets[secret_id(CHROMA_CONNECTION)]
    requests = sent.count(b"HTTP/1.1\r\n")
    assert requests >= 3 and sent.lower().count(b"x-chroma-token: " + real.encode().lower()) == requests
    assert b"eyJ" not in sent and b"proxy-authorization" not in sent.lower()  # no JWT, no proxy credentials
