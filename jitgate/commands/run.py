"""Top-level commands: `jitgate run`, `jitgate token`, `jitgate revoke`."""

from __future__ import annotations

import getpass
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console

from jitgate.capture import capture_unavailable_reason
from jitgate.client import BrokerClient, Minted, Pending
from jitgate.durations import parse_duration
from jitgate.errors import ApprovalDenied, ApprovalExpired, ApprovalPending, JitgateError
from jitgate.oidc_source import find_oidc_token
from jitgate.policy import load_policy
from jitgate.run import JobEnv, job_environment, pg_environment, run_job, write_ca_bundle

err = Console(stderr=True)

BrokerOpt = Annotated[str, typer.Option(envvar="JITGATE_BROKER_URL", help="Broker base URL.")]
OidcOpt = Annotated[str | None, typer.Option("--oidc-token", help="OIDC token (else the usual sources).")]


def _fail(exc: JitgateError) -> typer.Exit:
    err.print(f"[red]jitgate: {exc.code}: {exc.message}[/red]")
    return typer.Exit(2)


def _oidc(explicit: str | None, http: httpx.Client) -> str:
    return find_oidc_token(explicit=explicit, env=os.environ, http=http).token


def _mint(
    client: BrokerClient,
    oidc: str,
    connection: str,
    *,
    ttl: str | None,
    operations: list[str] | None,
    job: str | None,
    wait: int,
) -> Minted:
    answer = client.mint(oidc, connection, operations=operations, ttl=ttl and parse_duration(ttl), job=job)
    deadline = time.monotonic() + wait
    while isinstance(answer, Pending):
        err.print(f"issuance needs approval: approval id [bold]{answer.approval_id}[/bold]; waiting up to {wait}s")
        if time.monotonic() > deadline:
            raise ApprovalPending("approval did not arrive in time")
        time.sleep(2)
        state = client.approval(oidc, answer.approval_id)
        if state.get("token"):
            answer = Minted.from_json(state)
        elif state.get("state") == "denied":
            raise ApprovalDenied("approval denied")
        elif state.get("state") == "expired":
            raise ApprovalExpired("approval expired")
    return answer


def _key_env(minted: Minted, explicit: list[str] | None) -> tuple[str, ...]:
    if explicit:
        return tuple(explicit)
    if minted.key_env:
        return minted.key_env
    policy = os.environ.get("JITGATE_POLICY")
    if policy and Path(policy).exists():
        conn = load_policy(policy).connections.get(minted.connection)
        return conn.key_env if conn else ()
    return ()


def run(
    cmd: Annotated[list[str], typer.Argument(help="The job to run, after `--`.")],
    broker: BrokerOpt,
    connection: Annotated[str, typer.Option(envvar="JITGATE_CONNECTION", help="Connection name.")],
    gateway: Annotated[str, typer.Option(
        envvar="JITGATE_GATEWAY",
        help="Gateway host:port; https://host:port: TLS to the gateway, so the token never crosses in clear.",
    )],
    gateway_ca: Annotated[Path, typer.Option(envvar="JITGATE_GATEWAY_CA", help="Gateway CA certificate (PEM).")],
    ttl: Annotated[str | None, typer.Option(help="Requested lifetime, e.g. 10m (the policy may clamp it).")] = None,
    operation: Annotated[list[str] | None, typer.Option("--operation", help="Limit to these operations.")] = None,
    job: Annotated[str | None, typer.Option(envvar="JITGATE_JOB", help="Job id recorded with every request.")] = None,
    key_env: Annotated[
        list[str] | None, typer.Option(help="Variable that carries the API key, e.g. CO_API_KEY (repeatable).")
    ] = None,
    oidc_token: OidcOpt = None,
    capture: Annotated[bool, typer.Option(help="Use transparent local capture instead of HTTPS_PROXY.")] = False,
    wait_approval: Annotated[int, typer.Option(help="Seconds to wait when issuance needs approval.")] = 0,
    pg_gateway: Annotated[
        str | None, typer.Option(envvar="JITGATE_PG_GATEWAY", help="The gateway's Postgres listener host:port.")
    ] = None,
) -> None:
    """Run CMD with a JIT token that is revoked when CMD ends; exit with CMD's status.

    For a postgres connection the job gets libpq's variables (PGHOST, PGPORT, PGDATABASE, PGUSER,
    PGPASSWORD = the token, PGSSLMODE=verify-full, PGSSLROOTCERT) instead of a proxy."""
    if gateway.rpartition("://")[0] not in ("", "http", "https"):  # before a token is minted for nothing
        err.print("[red]jitgate: --gateway is host:port or https://host:port[/red]")
        raise typer.Exit(2)
    if capture:
        reason = capture_unavailable_reason()
        if reason:
            err.print(f"[red]jitgate: {reason}[/red]")
            raise typer.Exit(2)
    with httpx.Client(timeout=10.0) as http:
        client = BrokerClient(broker, http=http)
        try:
            oidc = _oidc(oidc_token, http)
            minted = _mint(client, oidc, connection, ttl=ttl, operations=operation, job=job, wait=wait_approval)
        except JitgateError as exc:
            raise _fail(exc) from None
        state_dir = os.environ.get("JITGATE_STATE_DIR")
        bundle = write_ca_bundle(gateway_ca, Path(state_dir) if state_dir else None)
        rc = 1
        try:
            if minted.dialect == "postgres":
                if not pg_gateway:
                    err.print("[red]jitgate: a postgres connection needs --pg-gateway (JITGATE_PG_GATEWAY)[/red]")
                    raise typer.Exit(2)
                user = os.environ.get("PGUSER") or getpass.getuser()
                env = pg_environment(os.environ, minted, gateway=pg_gateway, ca_bundle=bundle, user=user)
            else:
                env = job_environment(os.environ, minted, JobEnv(gateway, bundle, _key_env(minted, key_env), broker))
            err.print(f"jitgate: token {minted.jti} for {minted.connection}, expires at {minted.expires_at}")
            rc = run_job(cmd, env)
        except FileNotFoundError as exc:
            err.print(f"[red]jitgate: {exc}[/red]")
            rc = 127
        finally:
            bundle.unlink(missing_ok=True)
            try:
                client.revoke(oidc, minted.jti)
                err.print(f"jitgate: token {minted.jti} revoked")
            except JitgateError as exc:
                err.print(f"[red]jitgate: could not revoke {minted.jti}: {exc.code}[/red]")
                rc = rc or 3
    raise typer.Exit(rc)


def token(
    broker: BrokerOpt,
    connection: Annotated[str, typer.Option(envvar="JITGATE_CONNECTION")],
    ttl: Annotated[str | None, typer.Option()] = None,
    operation: Annotated[list[str] | None, typer.Option("--operation")] = None,
    job: Annotated[str | None, typer.Option(envvar="JITGATE_JOB")] = None,
    oidc_token: OidcOpt = None,
    wait_approval: Annotated[int, typer.Option()] = 0,
) -> None:
    """Mint a JIT token and print it (stdout) with its jti and expiry (stderr)."""
    with httpx.Client(timeout=10.0) as http:
        try:
            oidc = _oidc(oidc_token, http)
            minted = _mint(
                BrokerClient(broker, http=http), oidc, connection,
                ttl=ttl, operations=operation, job=job, wait=wait_approval,
            )
        except JitgateError as exc:
            raise _fail(exc) from None
    err.print(f"jti {minted.jti}, connection {minted.connection}, expires at {minted.expires_at}")
    sys.stdout.write(minted.token + "\n")


def revoke(
    jti: str,
    broker: BrokerOpt,
    oidc_token: OidcOpt = None,
) -> None:
    """Revoke a JIT token by its jti (its subject or a policy admin)."""
    with httpx.Client(timeout=10.0) as http:
        try:
            BrokerClient(broker, http=http).revoke(_oidc(oidc_token, http), jti)
        except JitgateError as exc:
            raise _fail(exc) from None
    err.print(f"revoked {jti}")
