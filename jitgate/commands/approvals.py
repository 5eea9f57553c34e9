"""`jitgate approvals list | approve ID --reason ... | deny ID --reason ...` against the broker.

The approver proves who they are with their own OIDC token (the same sources as `jitgate run`);
the broker decides whether they may vote. Issuance approvals and data-path holds look alike.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from jitgate.client import BrokerClient
from jitgate.errors import JitgateError
from jitgate.oidc_source import find_oidc_token

app = typer.Typer(no_args_is_help=True, help="List and decide pending approvals (issuance and held requests).")
err = Console(stderr=True)

BrokerOpt = Annotated[str, typer.Option(envvar="JITGATE_BROKER_URL", help="Broker base URL.")]
OidcOpt = Annotated[str | None, typer.Option("--oidc-token", help="Your OIDC token (else the usual sources).")]
_PAST = {"approve": "approved", "deny": "denied"}
ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why; recorded with your vote.")]


def _fail(exc: JitgateError) -> typer.Exit:
    err.print(f"[red]jitgate: {exc.code}: {exc.message}[/red]")
    return typer.Exit(2)


def _what(summary: dict[str, Any]) -> str:
    """One line of the masked summary: operation, where, how big, why."""
    parts = [str(summary.get("operation") or ",".join(summary.get("operations") or []) or "token")]
    if summary.get("host"):
        parts.append(f"{summary.get('method', '')} {summary['host']}{summary.get('path', '')}".strip())
    if summary.get("documents") is not None:
        parts.append(f"{summary['documents']} docs")
    if summary.get("bytes") is not None:
        parts.append(f"{summary['bytes']} B")
    if summary.get("statement"):  # a held SQL statement, its literals removed
        parts.append(f"statement: {summary['statement']}")
    if summary.get("tables"):
        parts.append("tables " + ",".join(summary["tables"]))
    if summary.get("reasons"):
        parts.append("why: " + ",".join(summary["reasons"]))
    if summary.get("job"):
        parts.append(f"job {summary['job']}")
    return "; ".join(parts)


@app.command("list")
def list_(
    broker: BrokerOpt,
    oidc_token: OidcOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the broker's JSON.")] = False,
) -> None:
    """Pending approvals you may decide."""
    with httpx.Client(timeout=10.0) as http:
        try:
            oidc = find_oidc_token(explicit=oidc_token, env=os.environ, http=http).token
            items = BrokerClient(broker, http=http).approvals(oidc)
        except JitgateError as exc:
            raise _fail(exc) from None
    if as_json:
        sys.stdout.write(json.dumps(items, indent=2) + "\n")
        return
    if not items:
        err.print("no pending approvals for you")
        return
    for a in items:  # one plain line each: ids stay whole and greppable
        expires = datetime.fromtimestamp(int(a.get("expires_at") or 0), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        sys.stdout.write(
            f"{a.get('id')}  {a.get('kind')}  {a.get('connection')}  by {a.get('requester')}  "
            f"{a.get('approvals', 0)}/{a.get('required', 1)} approvals  expires {expires}  "
            f"{_what(a.get('summary') or {})}\n"
        )


def _decide(verdict: str, approval_id: str, reason: str, broker: str, oidc_token: str | None) -> None:
    with httpx.Client(timeout=10.0) as http:
        try:
            oidc = find_oidc_token(explicit=oidc_token, env=os.environ, http=http).token
            result = BrokerClient(broker, http=http).decide(oidc, approval_id, verdict, reason)
        except JitgateError as exc:
            raise _fail(exc) from None
    votes = f"{result.get('approvals', 0)}/{result.get('required', 1)}"
    err.print(f"{_PAST[verdict]} {approval_id}: now {result.get('state')} ({votes} approvals)")
    sys.stdout.write(str(result.get("state")) + "\n")


@app.command()
def approve(approval_id: str, reason: ReasonOpt, broker: BrokerOpt, oidc_token: OidcOpt = None) -> None:
    """Approve a pending request (you cannot approve your own)."""
    _decide("approve", approval_id, reason, broker, oidc_token)


@app.command()
def deny(approval_id: str, reason: ReasonOpt, broker: BrokerOpt, oidc_token: OidcOpt = None) -> None:
    """Deny a pending request; one denial denies."""
    _decide("deny", approval_id, reason, broker, oidc_token)
