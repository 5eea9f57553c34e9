"""`jitgate policy check FILE`: validate a policy the way broker and gateway will at start."""

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
