"""A stop that cannot reach S3 loses no Postgres statement record: the durable spool takes them.

The real gateway with its Postgres listener, the real Postgres and psql, S3 (moto) reached through
a relay that the test cuts. Statements go through while S3 is there and after it is cut; the gateway
gets SIGTERM and exits, its task's spool is thrown away (as Fargate deletes a stopped task's
volumes), and a new gateway sharing the durable spool, with S3 back, ships what the first one left:
every statement's record in the bucket under the stopped gateway's id, none twice.
"""

from __future__ import annotations

import gzip
import json
import os
import secrets
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import trustme

from jitgate.devstack.aws import Stack
from jitgate.devstack.gateway import Gateway, jitgate_options, start_gateway
from jitgate.devstack.process import ChildServer
from jitgate.policy import Policy
from tests.pg.conftest import READER
from tests.relay import relay_to
from tests.reliability.harness import wait_for


def _records(stack: Stack, jti: str) -> list[dict[str, Any]]:
    s3 = boto3.client("s3", endpoint_url=stack.endpoint_url, region_name=stack.region)
    found: list[dict[str, Any]] = []
    for obj in s3.list_objects_v2(Bucket=stack.bucket, Prefix="sessions/").get("Contents", []):
        body = s3.get_object(Bucket=stack.bucket, Key=obj["Key"])["Body"].read()
        found += [r for r in map(json.loads, gzip.decompress(body).splitlines()) if r.get("jti") == jti]
    return found


@contextmanager
def _pg_gateway(
    work: Path, *, gateway_id: str, durable: Path, stack: Stack, policy: Path, broker: ChildServer, moto: str,
    upstream_ca: trustme.CA, aws_env: Mapping[str, str],
) -> Iterator[Gateway]:
    """The whole chain with the Postgres listener; AWS found through `aws_env` (S3 on its own endpoint)."""
    work.mkdir(parents=True)
    ca = work / "upstream-ca.pem"
    upstream_ca.cert_pem.write_to_path(str(ca))
    options = jitgate_options(
        policy=policy, jwks_url=f"{broker.url}/.well-known/jwks.json", table=stack.table, aws_endpoint="",
        region=stack.region, upstream_ca=ca, revocation_refresh=0.5, revocation_staleness=5.0,
    )
    options.update({
        "jitgate_issuer": broker.url, "jitgate_pg_listen": "127.0.0.1:0", "jitgate_bucket": stack.bucket,
        "jitgate_spool_dir": str(work / "spool"), "jitgate_gateway_id": gateway_id,
        "jitgate_segment_ms": "300", "jitgate_fsync_ms": "100", "jitgate_upload_backoff_max_ms": "500",
        "jitgate_durable_spool": str(durable), "jitgate_ship_timeout": "3s", "jitgate_drain_timeout": "2s",
    })
    env = {**os.environ, "AWS_MAX_ATTEMPTS": "1", "AWS_ENDPOINT_URL": moto, **aws_env}
    with start_gateway(work / "gw", options=options, env=env) as gw:
        assert gw.pg_port
        yield gw


def _psql(gw: Gateway, bundle: Path, token: str, *sql: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({
        "PGHOST": "127.0.0.1", "PGPORT": str(gw.pg_port), "PGDATABASE": "ranking", "PGUSER": "reranker",
        "PGPASSWORD": token, "PGSSLMODE": "verify-full", "PGSSLROOTCERT": str(bundle), "PGCONNECT_TIMEOUT": "10",
    })
    argv = ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1"]
    for statement in sql:
        argv += ["-c", statement]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr


def test_statement_records_a_stop_could_not_ship_reach_s3_through_the_next_gateway(
    tmp_path: Path, pg_stack: Stack, pg_policy: tuple[Path, Policy], pg_broker: ChildServer, moto_server: str,
    upstream_tls_ca: trustme.CA, pg_mint: Callable[..., dict[str, Any]],
) -> None:
    durable = tmp_path / "durable"
    stopped_id, adopter_id = "pg-stop-" + secrets.token_hex(3), "pg-adopt-" + secrets.token_hex(3)
    minted = pg_mint(READER)
    parts = {"stack": pg_stack, "policy": pg_policy[0], "broker": pg_broker, "moto": moto_server,
             "upstream_ca": upstream_tls_ca, "durable": durable}
    with relay_to(moto_server) as s3_path, _pg_gateway(
        tmp_path / "task-1", gateway_id=stopped_id, aws_env={"AWS_ENDPOINT_URL_S3": s3_path.url}, **parts,
    ) as gw:
        bundle = gw.client_bundle(tmp_path / "bundle-1.pem")
        # While S3 is there the records ship as the segments rotate ...
        _psql(gw, bundle, minted["token"], *(f"SELECT id FROM candidates WHERE id = {i}" for i in range(1, 4)))
        assert wait_for(lambda: len(_records(pg_stack, minted["jti"])) == 3, 30), "\n".join(gw.log)
        # ... then the way to S3 is cut: these stay in the task's spool.
        s3_path.up = False
        _psql(gw, bundle, minted["token"], *(f"SELECT id FROM candidates WHERE id = {i}" for i in range(4, 10)))
        gw.proc.send_signal(signal.SIGTERM)
        exit_code = gw.proc.wait(timeout=60)
        log = "\n".join(gw.log)
    assert exit_code == 0, log
    assert "moved to the durable spool" in log, log
    assert list((durable / f"{stopped_id}-pg").glob("*.jsonl")), log
    spool = tmp_path / "task-1" / "spool"
    assert list(spool.rglob("*.jsonl")) == [], log  # nothing left to die with the task ...
    shutil.rmtree(spool)  # ... whose volumes go with it
    assert len(_records(pg_stack, minted["jti"])) == 3  # the six after the cut are in the durable spool only

    with _pg_gateway(tmp_path / "task-2", gateway_id=adopter_id, aws_env={}, **parts) as adopter:
        assert wait_for(lambda: not (durable / f"{stopped_id}-pg").exists(), 60), "\n".join(adopter.log)
    shipped = _records(pg_stack, minted["jti"])
    statements = Counter(r["statement"] for r in shipped)
    assert len(shipped) == 9 and statements == {"SELECT id FROM candidates WHERE id = ?": 9}, shipped
    assert len({r["record_id"] for r in shipped}) == 9  # none twice
    assert {r["gateway"] for r in shipped} == {stopped_id}
