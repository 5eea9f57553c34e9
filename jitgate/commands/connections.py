"""`jitgate connections`: the connections and operations the caller's own identity may get."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import httpx
import typer

from jitgate.client import BrokerClient
from jitgate.commands.run import BrokerOpt, OidcOpt, _fail, _oidc
from jitgate.errors import JitgateError


def _ttl_text(seconds: object) -> str:
    if not isinstance(seconds, int):
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def connections(
    broker: BrokerOpt,
    oidc_token: OidcOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the broker's answer as JSON.")] = False,
) -> None:
    """List the connections (with dialect, operations, longest TTL) your identity may get tokens for."""
    with httpx.Client(timeout=10.0) as http:
        try:
            listed = BrokerClient(broker, http=http).connections(_oidc(oidc_token, http))
        except JitgateError as exc:
            raise _fail(exc) from None
    if as_json:
        sys.stdout.write(json.dumps({"connections": listed}) + "\n")
        return
    if not listed:
        typer.echo("no connection: no grant of the policy matches your identity", err=True)
        raise typer.Exit(1)
    rows = [
        (
            str(c.get("connection")), str(c.get("dialect")), ",".join(map(str, c.get("operations") or [])),
            _ttl_text(c.get("max_ttl")), "approval" if c.get("approval_required") else "",
        )
        for c in listed
    ]
    header = ("CONNECTION", "DIALECT", "OPERATIONS", "MAX TTL", "")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        sys.stdout.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")
