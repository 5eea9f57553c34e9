"""Top-level commands: `jitgate run`, `jitgate token`, `jitgate revoke`."""

from __future__ import annotations

import getpass
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console

from jitgate.capture import capture_unavailable_reason
from jitgate.client import BrokerClient, Minted, Pending
from jitgate.durations import parse_duration
from jitgate.errors import (
    ApprovalDenied,
    ApprovalExpired,
    ApprovalPending,
    BadRequest,
    JitgateError,
    NotFound,
    NotGranted,
    UnknownConnection,
)
from jitgate.gateway_check import check_pg, probe_http, verdict
from jitgate.oidc_source import find_oidc_token
from jitgate.policy import close_names, load_policy
from jitgate.run import JobEnv, job_environment, pg_environment, run_job, write_ca_bundle
from jitgate.token import KeySet

err = Console(stderr=True)

BrokerOpt = Annotated[str, typer.Option(envvar="JITGATE_BROKER_URL", help="Broker base URL.")]
OidcOpt = Annotated[str | None, typer.Option("--oidc-token", help="OIDC token (else the usual sources).")]


def _fail(exc: JitgateError) -> typer.Exit:
    """One line (never wrapped: scripts grep it), the message as it is (no markup read into it)."""
    err.print(f"jitgate: {exc.code}: {exc.message}", style="red", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _oidc(explicit: str | None, http: httpx.Client) -> str:
    return find_oidc_token(explicit=explicit, env=os.environ, http=http).token


def iso_utc(epoch: int) -> str:
    """An expiry as people and tools read it: ISO 8601, UTC, `2027-01-15T08:10:00Z`."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ttl_seconds(ttl: str | None) -> int | None:
    """`--ttl` in seconds; a bad one is a one-line error with a code, before anything is asked of the broker."""
    if ttl is None:
        return None
    try:
        return parse_duration(ttl)
    except ValueError as exc:
        raise BadRequest(f"--ttl: {exc}") from None


def _listing(client: BrokerClient, oidc: str) -> list[dict[str, object]] | None:
    """The caller's connections; None from a broker without GET /v1/connections."""
    try:
        return client.connections(oidc)
    except NotFound:
        return None


def _with_suggestion(exc: JitgateError, connection: str, listing: list[dict[str, object]] | None) -> JitgateError:
    """An unknown or ungranted name, with the close names among the caller's own (never anyone else's)."""
    if not isinstance(exc, UnknownConnection | NotGranted) or listing is None:
        return exc
    mine = [str(c.get("connection")) for c in listing]
    if connection in mine:
        return exc
    close = close_names(connection, mine)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return type(exc)(f"{exc.message}{hint} (`jitgate connections` lists the ones you may get)")


def _check_gateway(
    client: BrokerClient,
    listing: list[dict[str, object]] | None,
    connection: str,
    *,
    gateway: str,
    pg_gateway: str | None,
    bundle: Path,
    gateway_ca: Path,
) -> None:
    """Raise unless the gateway the job will use is there, trusted by the job and trusting this broker."""
    entry = next((c for c in listing or () if c.get("connection") == connection), None)
    if listing is not None and entry is None:
        return  # the mint refuses the name, with suggestions
    if entry is not None and entry.get("dialect") == "postgres":
        if pg_gateway:
            check_pg(pg_gateway, bundle, ca_file=gateway_ca)
        return
    answer = probe_http(gateway, bundle, ca_file=gateway_ca)
    verdict(answer, KeySet.from_jwks(client.jwks()).kids(), gateway=gateway, broker=client.base_url)


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
    answer = client.mint(oidc, connection, operations=operations, ttl=_ttl_seconds(ttl), job=job)
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
    check_gateway: Annotated[
        bool, typer.Option(help="Check the gateway (reachable, trusted, trusting this broker) before minting.")
    ] = True,
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
        state_dir = os.environ.get("JITGATE_STATE_DIR")
        bundle = write_ca_bundle(gateway_ca, Path(state_dir) if state_dir else None)
        listing = None
        try:
            _ttl_seconds(ttl)
            oidc = _oidc(oidc_token, http)
            listing = _listing(client, oidc)
            if check_gateway and not capture:  # captured jobs do not use the proxy port the probe goes to
                _check_gateway(client, listing, connection, gateway=gateway, pg_gateway=pg_gateway, bundle=bundle,
                               gateway_ca=gateway_ca)
            minted = _mint(client, oidc, connection, ttl=ttl, operations=operation, job=job, wait=wait_approval)
        except JitgateError as exc:
            bundle.unlink(missing_ok=True)
            raise _fail(_with_suggestion(exc, connection, listing)) from None
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
            err.print(
                f"jitgate: token {minted.jti} for {minted.connection}, expires at {iso_utc(minted.expires_at)}",
                soft_wrap=True,
            )
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
        client = BrokerClient(broker, http=http)
        listing = None
        try:
            _ttl_seconds(ttl)
            oidc = _oidc(oidc_token, http)
            try:
                minted = _mint(client, oidc, connection, ttl=ttl, operations=operation, job=job, wait=wait_approval)
            except (UnknownConnection, NotGranted):
                listing = _listing(client, oidc)
                raise
        except JitgateError as exc:
            raise _fail(_with_suggestion(exc, connection, listing)) from None
    err.print(f"jti {minted.jti}, connection {minted.connection}, expires at {iso_utc(minted.expires_at)}",
              soft_wrap=True)
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
