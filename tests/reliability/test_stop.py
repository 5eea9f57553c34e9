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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jitgate.devstack.aws import Stack
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import secret_id
from jitgate.devstack.upstream import Upstream
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
    keys = [aws_stack.secrets[secret_id(n)] for n in ("cohere-test", "store-test")]
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
