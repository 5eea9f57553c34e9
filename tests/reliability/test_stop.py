"""SIGTERM under load (an ECS scale-in, a deployment): every answered flow's record reaches S3.

The full chain (mitmdump + every addon) against a moto server, with an upstream that takes half a
second per answer so that flows are in flight when the signal comes, and segments that never
rotate on their own (the stop itself must close and ship the open one). Background clients keep
sending reranks with unique markers; the gateway gets SIGTERM, and once it has exited the bucket
(not the spool) must hold a record for every answer a client got.
"""

from __future__ import annotations

import secrets
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jitgate.devstack.aws import Stack
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import secret_id
from jitgate.devstack.upstream import Upstream
from tests.relay import relay_to
from tests.reliability.harness import (
    Load,
    client,
    full_gateway,
    outcome_counts,
    record_counts,
    records,
    wait_for,
    write_policy,
)


def test_sigterm_under_load_finishes_the_flows_in_flight_and_ships_every_record(
    tmp_path: Path, aws_stack: Stack, moto_server: str, broker: str, oidc_issuer: OidcIssuer,
    mint: Callable[..., dict[str, Any]],
) -> None:
    keys = [aws_stack.secrets[secret_id("cohere-test")]]
    with Upstream(api_keys=keys) as up:
        up.delay = 0.5
        gateway_id = "rel-stop-" + secrets.token_hex(3)
        gw = full_gateway(
            tmp_path, policy=write_policy(tmp_path, oidc_issuer.url, up), upstream=up, broker=broker,
            stack=aws_stack, moto=moto_server, gateway_id=gateway_id,
            jitgate_segment_ms=str(3_600_000), jitgate_segment_bytes=str(256 * 1024 * 1024),
        )
        bundle = gw.client_bundle(tmp_path / "bundle.pem")
        token = mint("cohere-test")["token"]
        with gw, Load(lambda: client(gw, bundle, token), up.url, threads=8, pause=0.05) as load:
            assert wait_for(lambda: load.count() >= 24, 30)
            assert records(moto_server, aws_stack.bucket, gateway_id) == []  # all of it in the open segment
            term = time.monotonic()
            gw.proc.send_signal(signal.SIGTERM)
            exit_code = gw.proc.wait(timeout=120)
            load.stop()
        log = "\n".join(gw.log)
    assert exit_code == 0, log

    answered = [entry for entry in load.log if entry[2] != 0]
    # Requests waiting on the upstream when the signal came were answered, not cut.
    assert [e for e in answered if e[0] < term < e[1] and e[2] == 200], (outcome_counts(load.log), log)
    shipped = records(moto_server, aws_stack.bucket, gateway_id)  # the bucket only, not the spool
    markers = {str(r.get("rerank_query", "")).split(" ")[0] for r in shipped}
    missing = [e[4] for e in answered if e[2] == 200 and e[4] not in markers]
    assert missing == [], (len(missing), outcome_counts(load.log), log)
    # Every other answer (503 gateway_stopping on a connection open at the stop, ...) has its record too.
    have = record_counts(shipped)
    assert all(have.get(key, 0) >= n for key, n in outcome_counts(answered).items()), (
        outcome_counts(answered), have,
    )
    assert "jitgate: stopping" in log


def _marker(record: dict[str, Any]) -> str:
    return str(record.get("rerank_query", "")).split(" ")[0]


def test_what_a_stop_cannot_ship_goes_to_the_durable_spool_and_another_gateway_ships_it(
    tmp_path: Path, aws_stack: Stack, moto_server: str, broker: str, oidc_issuer: OidcIssuer,
    mint: Callable[..., dict[str, Any]],
) -> None:
    """Scale-in while S3 cannot be reached: the stopping task's spool is about to be deleted with
    it, so what it could not ship moves to the durable spool (EFS in the fleet; a directory here)
    and a gateway sharing that directory ships it: every record in the bucket, none twice."""
    durable = tmp_path / "durable"
    for task in ("task-1", "task-2"):
        (tmp_path / task).mkdir()
    keys = [aws_stack.secrets[secret_id("cohere-test")]]
    stopped_id, adopter_id = "rel-durable-" + secrets.token_hex(3), "rel-adopter-" + secrets.token_hex(3)
    with Upstream(api_keys=keys) as up, relay_to(moto_server) as s3_path:
        up.delay = 0.2
        policy = write_policy(tmp_path, oidc_issuer.url, up)
        gw = full_gateway(
            tmp_path / "task-1", policy=policy, upstream=up, broker=broker, stack=aws_stack, moto=moto_server,
            gateway_id=stopped_id, aws_env={"AWS_ENDPOINT_URL": moto_server, "AWS_ENDPOINT_URL_S3": s3_path.url},
            jitgate_durable_spool=str(durable), jitgate_ship_timeout="3s",
        )
        bundle = gw.client_bundle(tmp_path / "bundle.pem")
        token = mint("cohere-test")["token"]
        with gw, Load(lambda: client(gw, bundle, token), up.url, threads=6, pause=0.05) as load:
            # Segments rotate every 300 ms and ship while S3 is there ...
            assert wait_for(lambda: len(records(moto_server, aws_stack.bucket, stopped_id)) >= 6, 60), "\n".join(gw.log)
            s3_path.up = False  # ... then the way to S3 is cut, and records pile up in the spool
            cut_at = load.count()
            assert wait_for(lambda: load.count() >= cut_at + 18, 60)
            gw.proc.send_signal(signal.SIGTERM)
            exit_code = gw.proc.wait(timeout=120)
            load.stop()
        log = "\n".join(gw.log)
    assert exit_code == 0, log
    assert "moved to the durable spool" in log, log
    left = list((durable / stopped_id).glob("*.jsonl"))
    assert left, log
    assert list((tmp_path / "task-1" / "spool" / "closed").glob("*.jsonl")) == []  # nothing left to die with the task
    before = records(moto_server, aws_stack.bucket, stopped_id)
    answered = [entry for entry in load.log if entry[2] != 0]
    assert {e[4] for e in answered if e[2] == 200} - {_marker(r) for r in before}, "S3 was cut too late to test"

    # Another task (started by the scale-out that follows, or one already running) shares the directory.
    with Upstream(api_keys=keys) as up2:
        adopter = full_gateway(
            tmp_path / "task-2", policy=write_policy(tmp_path, oidc_issuer.url, up2), upstream=up2, broker=broker,
            stack=aws_stack, moto=moto_server, gateway_id=adopter_id, jitgate_durable_spool=str(durable),
        )
        with adopter:
            assert wait_for(lambda: not (durable / stopped_id).exists(), 60), "\n".join(adopter.log)
    shipped = records(moto_server, aws_stack.bucket, stopped_id)  # the bucket only, under the stopped task's id
    seen = Counter(_marker(r) for r in shipped if r.get("rerank_query"))
    missing = [e[4] for e in answered if e[2] == 200 and e[4] not in seen]
    assert missing == [], (len(missing), outcome_counts(load.log), log)
    assert [m for m, n in seen.items() if n > 1] == []  # none twice
    have = record_counts(shipped)
    assert all(have.get(key, 0) >= n for key, n in outcome_counts(answered).items()), (outcome_counts(answered), have)
