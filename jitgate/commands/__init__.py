"""Command groups of the `jitgate` CLI."""
