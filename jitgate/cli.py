"""The `jitgate` command. Each command group lives in its own module under `jitgate/commands/`."""

from __future__ import annotations

import importlib

import typer

# No local variables in tracebacks: they can hold a token, a secret's value or a CA key.
app = typer.Typer(
    no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False,
    help="Just-in-time access for rerank pipelines.",
)

# (module under jitgate.commands, command group name); each module exposes `app: typer.Typer`.
_GROUPS: list[tuple[str, str]] = [
    ("policy", "policy"),
    ("audit", "audit"),
    ("sessions", "sessions"),
    ("approvals", "approvals"),
    ("ca", "ca"),
]


# (module under jitgate.commands, function name, command name) for top-level commands.
_COMMANDS: list[tuple[str, str, str]] = [
    ("run", "run", "run"),
    ("run", "token", "token"),
    ("run", "revoke", "revoke"),
    ("connections", "connections", "connections"),
    ("dev", "dev", "dev"),
    ("dev", "gateway", "gateway"),
]


def _register() -> None:
    for module, func, name in _COMMANDS:
        fn = getattr(importlib.import_module(f"jitgate.commands.{module}"), func)
        app.command(name, context_settings={"allow_interspersed_args": False})(fn)
    for module, name in _GROUPS:
        sub = importlib.import_module(f"jitgate.commands.{module}")
        app.add_typer(sub.app, name=name)


def main() -> None:
    _register()
    app()
