"""`jitgate policy check FILE`: validate a policy the way broker and gateway will at start.
`jitgate policy ports FILE`: the upstream ports its connections use, for the fleet's egress."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from jitgate.errors import PolicyError
from jitgate.policy import load_policy

app = typer.Typer(no_args_is_help=True, help="Validate policies.")


@app.command("check")
def check(path: Path) -> None:
    """Validate a policy file; exit 1 with the field and line of every problem."""
    console = Console()
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"[green]ok[/green]: {len(policy.connections)} connections, {len(policy.grants)} grants"
    )


@app.command("ports")
def ports(path: Path) -> None:
    """Print the upstream ports of the policy's connections, comma-separated: gateway.yaml's UpstreamPorts."""
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        Console(stderr=True).print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None
    typer.echo(",".join(str(port) for port in policy.upstream_ports))
