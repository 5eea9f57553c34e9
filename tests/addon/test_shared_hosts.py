"""Two connections on one host: the token's `conn` claim picks the connection, never the host.

Security review of sharing hosts, written as tests: a token for connection A never gets
connection B's credential, upstream, scope, limits or masking profile, whatever Host header,
CONNECT target or key header the client sends. The chain runs token_gate → scope_guard →
leak_guard (profile) → credential_inject with real hooks (taddons/tflow), moto for AWS.
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from mitmproxy.test import taddons, tflow

from addon import meta
from addon.approval_hold import ApprovalHold
from addon.credential_inject import CredentialInject
from addon.leak_guard import LeakGuard
from addon.scope_guard import ScopeGuard
from addon.token_gate import TokenGate
from jitgate.policy import Policy, parse_policy
from jitgate.token import Claims, KeySet
from jitgate.token_intake import take_token
from tests.addon.jit_fixtures import (  # noqa: F401 (fixtures)
    JWKS_URL,
    TABLE,
    Signer,
    anyio_backend_fixture,
    aws_fixture,
)

pytestmark = pytest.mark.anyio

# cohere-a and cohere-b: two accounts of one vendor on one public host (api.cohere.com), with
# different credentials (header and format), upstreams (same upstream host, other ports), masks
# and operations. B alone also answers on b.cohere.test and has an `embed` operation.
SHARED_POLICY = """
version: 1
issuers:
  - {issuer: https://oidc.test, audience: jitgate}
profiles:
  default: {request_pii: mask}
  strict: {request_pii: block}
connections:
  cohere-a:
    dialect: cohere
    upstream: https://127.0.0.1:9443
    hosts: [api.cohere.com]
    credential: {secret_id: jitgate/cohere-a, json_key: api_key, header: Authorization, format: "Bearer {secret}"}
  cohere-b:
    dialect: cohere
    upstream: https://127.0.0.1:9444
    hosts: [api.cohere.com, b.cohere.test]
    mask: strict
    credential: {secret_id: jitgate/cohere-b, header: X-Api-Key, format: "{secret}"}
    operations:
      embed: [{method: POST, path: /v2/embed}]
    approval: {operations: [embed]}
  jina:
    dialect: jina
    upstream: https://api.jina.ai
    credential: {secret_id: jitgate/jina}
"""
POLICY: Policy = parse_policy(SHARED_POLICY)
PORTS = {"cohere-a": 9443, "cohere-b": 9444}
MASKS = {"cohere-a": "default", "cohere-b": "strict"}


@pytest.fixture(name="shared_policy")
def shared_policy_fixture(tmp_path: Path) -> Path:
    p = tmp_path / "shared.yaml"
    p.write_text(SHARED_POLICY)
    return p


@pytest.fixture(name="real")
def real_fixture(aws: dict[str, Any]) -> dict[str, str]:
    """Fake upstream keys made now, stored in (mock) Secrets Manager."""
    keys = {"cohere-a": "a-" + secrets.token_hex(16), "cohere-b": "b-" + secrets.token_hex(16)}
    aws["secretsmanager"].create_secret(Name="jitgate/cohere-a", SecretString=json.dumps({"api_key": keys["cohere-a"]}))
    aws["secretsmanager"].create_secret(Name="jitgate/cohere-b", SecretString=keys["cohere-b"])
    return keys


class _Chain:
    def __init__(self, aws: dict[str, Any], signer: Signer) -> None:
        self.gate = TokenGate(jwks_fetcher=lambda url: self._keys(url, signer), dynamodb=aws["dynamodb"])
        self.guard = ScopeGuard(dynamodb=aws["dynamodb"])
        self.leak = LeakGuard()
        self.inject = CredentialInject(secretsmanager=aws["secretsmanager"])

    @staticmethod
    def _keys(url: str, signer: Signer) -> KeySet:
        assert url == JWKS_URL
        return signer.keyset()

    async def run(self, f: Any) -> None:
        await self.gate.request(f)
        await self.guard.request(f)
        await self.inject.request(f)


@pytest.fixture(name="chain")
def chain_fixture(aws: dict[str, Any], shared_policy: Path, real: dict[str, str]) -> Iterator[tuple[_Chain, Signer]]:
    signer = Signer()
    chain = _Chain(aws, signer)
    with taddons.context(chain.gate, chain.guard, chain.leak, chain.inject) as tctx:
        opts = {"jitgate_policy": str(shared_policy), "jitgate_table": TABLE}
        tctx.configure(chain.gate, jitgate_jwks_url=JWKS_URL, **opts)
        tctx.configure(chain.guard, **opts)
        tctx.configure(chain.inject, **opts)
        tctx.configure(chain.leak, jitgate_policy=str(shared_policy))
        chain.gate.running()
        try:
            yield chain, signer
        finally:
            chain.gate.done()


def _basic(token: str) -> str:
    return "Basic " + base64.b64encode(f"jit:{token}".encode()).decode()


def _flow(host: str, *, tunnel: str | None = None, path: str = "/v2/rerank", headers: dict[str, str] | None = None,
          body: Any = None) -> Any:
    f = tflow.tflow()
    f.request.host, f.request.port, f.request.scheme = host, 443, "https"
    f.request.method, f.request.path = "POST", path
    f.request.headers["Host"] = host
    for k, v in (headers or {}).items():
        f.request.headers[k] = v
    f.request.content = json.dumps(body if body is not None else {"query": "q", "documents": ["a", "b"]}).encode()
    f.server_conn.address = (tunnel, 443) if tunnel is not None else None
    return f


def _present(how: str, token: str) -> dict[str, str]:
    return {
        "bearer": {"Authorization": f"Bearer {token}"},
        "b-key-header": {"X-Api-Key": token},
        "proxy": {"Proxy-Authorization": _basic(token)},
    }[how]


def _forwarded(f: Any) -> str:
    return json.dumps([[k, v] for k, v in f.request.headers.items(multi=True)])


# -- token_gate: the token in any serving connection's key header ---------------------------


@pytest.mark.parametrize(("conn", "how"), list(itertools.product(PORTS, ["bearer", "b-key-header", "proxy"])))
def test_take_token_checks_every_serving_connection(conn: str, how: str) -> None:
    token = Signer().mint(conn=conn)
    f = _flow("api.cohere.com", headers=_present(how, token))
    assert take_token(f.request.headers, POLICY.connections_for_host("api.cohere.com")) == token
    assert token not in _forwarded(f)


def test_take_token_strips_every_copy_and_takes_the_first_by_precedence() -> None:
    signer = Signer()
    ta, tb = signer.mint(conn="cohere-a"), signer.mint(conn="cohere-b")
    f = _flow("api.cohere.com", headers={"Authorization": f"Bearer {ta}", "X-Api-Key": tb})
    assert take_token(f.request.headers, POLICY.connections_for_host("api.cohere.com")) == ta
    assert ta not in _forwarded(f) and tb not in _forwarded(f)
    # A host only A serves: B's key header is no key header there, and is left to credential_inject.
    g = _flow("a-only.test", headers={"X-Api-Key": tb})
    assert take_token(g.request.headers, ()) is None


async def test_token_gate_reads_b_key_header_on_the_shared_host(chain: tuple[_Chain, Signer]) -> None:
    c, signer = chain
    token = signer.mint(conn="cohere-b")
    f = _flow("api.cohere.com", headers={"X-Api-Key": token})
    await c.gate.request(f)
    assert f.response is None
    claims = meta.state_of(f).claims
    assert claims is not None and claims.conn == "cohere-b"
    assert token not in _forwarded(f)


# -- the chain: token picks the connection; host, tunnel and headers cannot switch it ---------

HOSTS = ["api.cohere.com", "127.0.0.1", "b.cohere.test", "api.jina.ai", "evil.example"]
TUNNELS = [None, "api.cohere.com", "b.cohere.test", "api.jina.ai", "evil.example"]


def _expected(conn: str, how: str, host: str, tunnel: str | None) -> str | None:
    """The rule, from the policy: refused unless the token's connection serves host and tunnel.

    X-Api-Key is a key header only on hosts cohere-b serves; elsewhere the token is not found."""
    served = {h for c in POLICY.connections.values() for h in c.all_hosts}
    if how == "b-key-header" and host not in POLICY.connections["cohere-b"].all_hosts:
        return "token_required"
    mine = POLICY.connections[conn].all_hosts
    if host not in served or (tunnel is not None and tunnel not in served):
        return "host_not_allowed"
    if host not in mine:
        return "wrong_connection"
    if tunnel is not None and tunnel not in mine:
        return "host_not_allowed"
    return None


@pytest.mark.parametrize(("conn", "how"), list(itertools.product(PORTS, ["bearer", "b-key-header", "proxy"])))
async def test_a_token_never_gets_another_connections_credential(
    chain: tuple[_Chain, Signer], real: dict[str, str], conn: str, how: str
) -> None:
    """Every Host header x CONNECT target (one chain setup per token placement: moto is slow to start)."""
    c, signer = chain
    token = signer.mint(conn=conn, scope={"operations": ["rerank"]}, mask=MASKS[conn])  # as the broker mints
    other = next(n for n in PORTS if n != conn)
    mine = POLICY.connections[conn]
    allowed = 0
    for host, tunnel in itertools.product(HOSTS, TUNNELS):
        case = f"{conn} {how} host={host} tunnel={tunnel}"
        # The client also sends what would be the other connection's key header.
        headers = {**_present(how, token)}
        headers.setdefault("X-Api-Key", "client-guess")
        f = _flow(host, tunnel=tunnel, headers=headers)
        await c.run(f)
        sent = _forwarded(f)
        assert real[other] not in sent and real[other] not in json.dumps(vars(meta.state_of(f)), default=str), case
        code = _expected(conn, how, host, tunnel)
        if code is not None:  # answered by the gateway: nothing is forwarded, headers are never recorded
            assert f.response is not None and f.response.json()["code"] == code, case
            assert real[conn] not in sent and not meta.state_of(f).injected, case
            continue
        allowed += 1
        assert f.response is None, case
        assert token not in sent, case
        assert meta.state_of(f).connection_name == conn, case
        assert f.request.headers[mine.credential.header] == mine.credential.format.replace("{secret}", real[conn]), case
        assert (f.request.host, f.request.port) == ("127.0.0.1", PORTS[conn]), case
        assert c.leak._profile(f) == POLICY.profile(MASKS[conn]), case  # the token's mask, never the neighbour's
    assert allowed > 0  # the matrix holds passing cases, not only refusals


async def test_scope_and_limits_are_the_tokens_connection(chain: tuple[_Chain, Signer]) -> None:
    c, signer = chain
    # B's own operation on the shared host with an A token: A has no such operation.
    a = signer.mint(conn="cohere-a", scope={"operations": ["rerank"]})
    f = _flow("api.cohere.com", path="/v2/embed", headers={"Authorization": f"Bearer {a}"})
    await c.run(f)
    assert f.response.json()["code"] == "operation_not_allowed"
    # The same call with a B token that has it in scope passes, to B.
    b = signer.mint(conn="cohere-b", scope={"operations": ["rerank", "embed"]})
    g = _flow("api.cohere.com", path="/v2/embed", headers={"X-Api-Key": b})
    await c.run(g)
    assert g.response is None and meta.state_of(g).connection_name == "cohere-b"
    assert meta.state_of(g).operation == "embed"
    # Limits travel in the token: A's tight document limit holds on the shared host.
    tight = signer.mint(conn="cohere-a", limits={"max_documents": 1})
    h = _flow("api.cohere.com", headers={"Authorization": f"Bearer {tight}"})
    await c.run(h)
    assert h.response.json()["code"] == "payload_too_large"


@pytest.mark.parametrize(("conn", "held"), [("cohere-b", True), ("cohere-a", False)])
async def test_approval_hold_falls_back_to_the_tokens_connection(
    aws: dict[str, Any], shared_policy: Path, conn: str, held: bool
) -> None:
    """B holds `embed`; A has no approval rules. Without scope_guard's pick in the flow, the hold
    reads the token's connection: not the first one serving the host, and not none."""
    hold = ApprovalHold(dynamodb=aws["dynamodb"])
    with taddons.context(hold) as tctx:
        tctx.configure(hold, jitgate_policy=str(shared_policy), jitgate_table=TABLE)
        f = _flow("api.cohere.com", path="/v2/embed")
        token = Signer().mint(conn=conn, scope={"operations": ["embed"]} if conn == "cohere-b" else {"operations": []})
        meta.state_of(f).claims = Claims.model_validate(jwt.decode(token, options={"verify_signature": False}))
        meta.state_of(f).operation = "embed"
        await hold.request(f)
        assert f.intercepted is held
        hold.done()


def test_take_token_tries_each_format_of_a_shared_key_header() -> None:
    """Two connections on one host, one header name, two formats: the token is found in either."""
    b_header = 'header: X-Api-Key, format: "{secret}"'
    doc = SHARED_POLICY.replace(b_header, 'header: Authorization, format: "Token {secret}"')
    conns = parse_policy(doc).connections_for_host("api.cohere.com")
    assert [c.credential.format for c in conns] == ["Bearer {secret}", "Token {secret}"]
    token = Signer().mint(conn="cohere-b")
    for value in (f"Token {token}", f"Bearer {token}"):
        f = _flow("api.cohere.com", headers={"Authorization": value})
        assert take_token(f.request.headers, conns) == token
        assert "Authorization" not in f.request.headers


async def test_connect_to_a_shared_host_passes_before_any_token(aws: dict[str, Any], shared_policy: Path) -> None:
    guard = ScopeGuard(dynamodb=aws["dynamodb"])
    with taddons.context(guard) as tctx:
        tctx.configure(guard, jitgate_policy=str(shared_policy), jitgate_table=TABLE)
        flows = {host: tflow.tflow() for host in ("api.cohere.com", "127.0.0.1", "b.cohere.test", "evil.example")}
        for host, f in flows.items():
            f.request.method, f.request.host = "CONNECT", host
            guard.http_connect(f)
    assert [h for h, f in flows.items() if f.response is not None] == ["evil.example"]
    assert flows["evil.example"].response.json()["code"] == "host_not_allowed"
