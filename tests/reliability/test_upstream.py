"""The upstream resets connections or never answers, under load through the full chain.

A reset is a prompt 502 with jitgate's JSON `{code: upstream_unavailable, message}`
(addon/error_answers.py); a silent upstream gets 504 `{code: upstream_timeout, message}` once
`jitgate_upstream_timeout` passes (addon/upstream_timeout.py) and its connection is closed. The
gateway stays up, nothing is retried blindly, and every flow has its session record (error
`upstream_error` / `upstream_timeout`).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from mitmproxy import http
from mitmproxy.io import FlowReader

from jitgate import flow_state
from jitgate.devstack.aws import Stack
from jitgate.devstack.gateway import Gateway
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import secret_id
from tests.reliability.harness import (
    FaultyUpstream,
    client,
    full_gateway,
    peak_rss,
    records,
    wait_for,
    write_policy,
)

UPSTREAM_TIMEOUT = "1500ms"
MB = 1024 * 1024
INSPECT_LIMIT = MB  # jitgate_max_inspect_bytes of the bomb cases
BODY = {"model": "rerank-v3.5", "query": "q", "documents": ["a", "b"]}


@pytest.fixture
def faulty(
    request: pytest.FixtureRequest, tmp_path: Path, oidc_issuer: OidcIssuer, broker: str, aws_stack: Stack,
    moto_server: str, mint: Callable[..., dict[str, Any]],
) -> Iterator[tuple[FaultyUpstream, Gateway, Path, str, str]]:
    up = FaultyUpstream(trustme.CA(), request.param)
    gateway_id = f"rel-up-{request.param}-" + secrets.token_hex(3)
    sized = request.param.startswith("bomb") or request.param == "huge"
    extra = {"jitgate_max_inspect_bytes": str(INSPECT_LIMIT)} if sized else {}
    # tcp_timeout well past the upstream timeout: a 504 can only come from jitgate's own timer.
    gw = full_gateway(
        tmp_path, policy=write_policy(tmp_path, oidc_issuer.url, up), upstream=up,  # type: ignore[arg-type]
        broker=broker, stack=aws_stack, moto=moto_server, gateway_id=gateway_id, tcp_timeout="30",
        jitgate_upstream_timeout=UPSTREAM_TIMEOUT, **extra,
    )
    try:
        with gw:
            yield up, gw, gw.client_bundle(tmp_path / "bundle.pem"), mint("cohere-test")["token"], gateway_id
            assert gw.proc.poll() is None, "\n".join(gw.log)
    finally:
        up.close()


def _send_many(gw: Gateway, bundle: Path, token: str, url: str, n: int, threads: int) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        with client(gw, bundle, token) as c:
            for _ in range(k):
                try:
                    resp = c.post(f"{url}/v2/rerank", json=BODY)
                    item = (resp.status_code, resp.headers.get("content-type", ""))
                except httpx.HTTPError as exc:
                    item = (0, type(exc).__name__)
                with lock:
                    out.append(item)

    pool = [threading.Thread(target=worker, args=(n // threads,)) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return out


def _flow_records(
    moto: str, stack: Stack, gateway_id: str, spool: Path, want: int, timeout: float = 20
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def enough() -> bool:
        nonlocal found
        found = [r for r in records(moto, stack.bucket, gateway_id, spool) if r.get("method") == "POST"]
        return len(found) >= want

    wait_for(enough, timeout)
    return found


@pytest.mark.parametrize("faulty", ["reset"], indirect=True)
def test_upstream_resets_are_prompt_502s_and_recorded(
    faulty: tuple[FaultyUpstream, Gateway, Path, str, str], aws_stack: Stack, moto_server: str, tmp_path: Path
) -> None:
    up, gw, bundle, token, gateway_id = faulty
    answers = _send_many(gw, bundle, token, up.url, 24, 4)
    assert [s for s, _ in answers] == [502] * 24
    assert up.accepted >= 24  # each request went out once: nothing was answered from thin air
    recs = _flow_records(moto_server, aws_stack, gateway_id, tmp_path / "spool", 24)
    assert len(recs) == 24
    assert {(r["status"], r["error"], r["decision"]) for r in recs} == {(0, "upstream_error", "blocked")}
    assert all(r["sub"] and r["jti"] for r in recs)  # who tried is on record even though nothing came back


@pytest.mark.parametrize("faulty", ["hang"], indirect=True)
def test_silent_upstream_under_load_is_504_and_recorded(
    faulty: tuple[FaultyUpstream, Gateway, Path, str, str], aws_stack: Stack, moto_server: str, tmp_path: Path
) -> None:
    up, gw, bundle, token, gateway_id = faulty
    answers = _send_many(gw, bundle, token, up.url, 8, 4)
    assert answers == [(504, "application/json")] * 8, answers  # never a hang, never a 200, never a bare close
    assert up.accepted == 8  # each request went out once: a timed-out request is not retried
    assert wait_for(lambda: up.closed == 8, 10), up.closed  # every silent connection was closed by the gateway
    recs = _flow_records(moto_server, aws_stack, gateway_id, tmp_path / "spool", 8)
    assert len(recs) == 8
    assert {(r["status"], r["error"], r["decision"]) for r in recs} == {(0, "upstream_timeout", "blocked")}


@pytest.mark.parametrize("faulty", ["reset"], indirect=True)
def test_upstream_reset_answer_is_json(faulty: tuple[FaultyUpstream, Gateway, Path, str, str]) -> None:
    up, gw, bundle, token, _ = faulty
    with client(gw, bundle, token) as c:
        resp = c.post(f"{up.url}/v2/rerank", json=BODY)
    assert resp.status_code == 502 and resp.headers["content-type"] == "application/json"
    assert resp.json()["code"] == "upstream_unavailable" and set(resp.json()) == {"code", "message"}
    assert "127.0.0.1" not in resp.text  # mitmproxy's own text (hosts, reasons) is not passed on


@pytest.mark.parametrize("faulty", ["hang"], indirect=True)
def test_silent_upstream_answer_is_504_json(
    faulty: tuple[FaultyUpstream, Gateway, Path, str, str], aws_stack: Stack, moto_server: str, tmp_path: Path
) -> None:
    up, gw, bundle, token, gateway_id = faulty
    with client(gw, bundle, token) as c:
        resp = c.post(f"{up.url}/v2/rerank", json=BODY)
    assert resp.status_code == 504 and resp.headers["content-type"] == "application/json"
    assert resp.json() == {"code": "upstream_timeout", "message": "the upstream did not answer in time"}
    assert token not in resp.text and "127.0.0.1" not in resp.text
    assert wait_for(lambda: up.closed >= 1, 10), "the gateway left the silent upstream's connection open"
    [rec] = _flow_records(moto_server, aws_stack, gateway_id, tmp_path / "spool", 1)
    assert (rec["status"], rec["error"], rec["decision"]) == (0, "upstream_timeout", "blocked")
    assert rec["sub"] and rec["jti"]
    assert not any(token in line for line in gw.log)
    assert not any(secret in line for secret in aws_stack.secrets.values() for line in gw.log)
    assert not any("crashed" in line or "Traceback" in line for line in gw.log), "\n".join(gw.log)
    assert any("upstream_timeout" in line for line in gw.log)  # the gateway says why it answered 504


# -- decompression bombs from the upstream -----------------------------------------------------


@pytest.mark.parametrize("faulty", ["bomb"], indirect=True)
def test_response_bomb_is_502_json_with_bounded_memory(
    faulty: tuple[FaultyUpstream, Gateway, Path, str, str], aws_stack: Stack, moto_server: str, tmp_path: Path
) -> None:
    up, gw, bundle, token, gateway_id = faulty
    base = peak_rss(gw.proc.pid)
    with client(gw, bundle, token) as c:
        resp = c.post(f"{up.url}/v2/rerank", json=BODY)
    growth = peak_rss(gw.proc.pid) - base
    print(f"response gzip bomb {len(up.bomb) // 1024} KB -> {up.bomb_size // MB} MB: "
          f"{resp.status_code} {resp.json().get('code')}, gateway peak RSS +{growth / MB:.1f} MB")
    assert resp.status_code == 502 and resp.headers["content-type"] == "application/json"
    assert resp.json() == {
        "code": "upstream_response_too_large", "message": "the upstream response exceeds the gateway's inspection limit"
    }
    assert growth < 40 * MB, f"peak RSS grew by {growth // MB} MB for a {len(up.bomb) // 1024} KB response bomb"
    [rec] = _flow_records(moto_server, aws_stack, gateway_id, tmp_path / "spool", 1)
    assert (rec["status"], rec["error"], rec["decision"]) == (502, "upstream_response_too_large", "blocked")
    assert gw.proc.poll() is None


@pytest.mark.parametrize("faulty", ["bomb-stream"], indirect=True)
def test_streamed_response_bomb_is_cut_at_the_limit_with_bounded_memory(
    faulty: tuple[FaultyUpstream, Gateway, Path, str, str], aws_stack: Stack, moto_server: str, tmp_path: Path
) -> None:
    up, gw, bundle, token, gateway_id = faulty
    base = peak_rss(gw.proc.pid)
    received, status, failure = 0, 0, ""
    with client(gw, bundle, token) as c:
        try:
            with c.stream("POST", f"{up.url}/v2/rerank", json=BODY) as resp:
                status = resp.status_code
                for chunk in resp.iter_bytes():
                    received += len(chunk)
        except httpx.HTTPError as exc:
            failure = type(exc).__name__
    growth = peak_rss(gw.proc.pid) - base
    print(f"streamed response gzip bomb {len(up.bomb) // 1024} KB -> {up.bomb_size // MB} MB: status {status}, "
          f"{received} bytes then {failure or 'a clean end'}, gateway peak RSS +{growth / MB:.1f} MB")
    assert status == 200  # the headers went out before the body was known to be a bomb
    assert failure, "the cut stream must not look complete to the client"
    assert received <= INSPECT_LIMIT  # never more than the limit, decoded
    assert growth < 40 * MB, f"peak RSS grew by {growth // MB} MB for a {len(up.bomb) // 1024} KB streamed bomb"
    assert wait_for(lambda: up.closed == 1, 10), "the gateway kept reading the bomb\n" + "\n".join(gw.log)
    [rec] = _flow_records(moto_server, aws_stack, gateway_id, tmp_path / "spool", 1)
    assert (rec["status"], rec["error"], rec["decision"]) == (0, "upstream_response_too_large", "blocked")
    assert not any("crashed" in line or "Traceback" in line for line in gw.log), "\n".join(gw.log)


@pytest.mark.parametrize("faulty", ["truncate", "huge"], indirect=True)
def test_upstream_failing_after_the_headers_is_recorded(
    faulty: tuple[FaultyUpstream, Gateway, Path, str, str], aws_stack: Stack, moto_server: str, tmp_path: Path
) -> None:
    """"truncate": the body ends short; "huge": its length is over mitmproxy's body_size_limit."""
    up, gw, bundle, token, gateway_id = faulty
    with client(gw, bundle, token) as c:
        resp = c.post(f"{up.url}/v2/rerank", json=BODY)
    # Buffered: nothing of the answer went out yet, so the client gets the JSON 502.
    assert (resp.status_code, resp.json()["code"]) == (502, "upstream_unavailable")
    # The spool is read too (segments of 0.3 s, fsync every 0.1 s): 5 s is ample once this is fixed.
    recs = _flow_records(moto_server, aws_stack, gateway_id, tmp_path / "spool", 1, timeout=5)
    assert [r["error"] for r in recs] == ["upstream_error"]


# -- shutdown with a request in flight ---------------------------------------------------------


def test_a_flow_in_flight_at_shutdown_is_saved_without_the_credential(
    tmp_path: Path, oidc_issuer: OidcIssuer, broker: str, aws_stack: Stack, moto_server: str,
    mint: Callable[..., dict[str, Any]],
) -> None:
    """`mitmdump -w`: mitmproxy saves the flows still in flight when it stops. One waiting on a
    silent upstream then still carried the injected upstream key in its request headers."""
    up = FaultyUpstream(trustme.CA(), "hang")
    flows_file = tmp_path / "flows.mitm"
    token = mint("cohere-test")["token"]
    real_key = aws_stack.secrets[secret_id("cohere-test")]
    answers: list[object] = []
    try:
        gw = full_gateway(
            tmp_path, policy=write_policy(tmp_path, oidc_issuer.url, up), upstream=up,  # type: ignore[arg-type]
            broker=broker, stack=aws_stack, moto=moto_server, gateway_id="rel-inflight-" + secrets.token_hex(3),
            extra_args=["-w", str(flows_file)], tcp_timeout="30", jitgate_upstream_timeout="60s",
            # The stop waits this long for the flow to finish (addon/graceful_stop.py), then the
            # flow is still in flight when mitmproxy's save addon writes the file.
            jitgate_drain_timeout="1s",
        )
        with gw:
            bundle = gw.client_bundle(tmp_path / "bundle.pem")

            def send() -> None:
                try:
                    with client(gw, bundle, token) as c:
                        answers.append(c.post(f"{up.url}/v2/rerank", json=BODY).status_code)
                except httpx.HTTPError as exc:
                    answers.append(type(exc).__name__)

            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            assert wait_for(lambda: up.accepted == 1, 10), "the request never reached the upstream"
            gw.stop()  # SIGTERM: mitmproxy's `done` saves what is in flight
            sender.join(10)
            log = "\n".join(gw.log)
    finally:
        up.close()
    assert answers and answers[0] != 200, answers
    raw = flows_file.read_bytes()
    with flows_file.open("rb") as fh:
        flows = [f for f in FlowReader(fh).stream() if isinstance(f, http.HTTPFlow)]
    assert len(flows) == 1 and flows[0].response is None, log  # saved while still waiting
    assert raw.find(real_key.encode()) == -1, "the upstream key is in the flow file"
    assert raw.find(token.encode()) == -1, "the JIT token is in the flow file"
    assert not [k for k in flows[0].metadata if "secret" in k], flows[0].metadata
    assert flows[0].metadata[flow_state.INJECTED] is True  # its state was written at `done`, without the secret
