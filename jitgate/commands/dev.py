"""`jitgate dev`: the whole stack on loopback until Ctrl-C; `jitgate gateway`: mitmdump with the chain."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from jitgate.capture import capture_unavailable_reason
from jitgate.devstack.gateway import mitmdump_argv

out = Console(stderr=True)


_PORT = typer.Option(min=0, max=65535, help="Loopback port (0: a free one).")


def dev(
    state_dir: Annotated[Path, typer.Option(help="Folder that keeps the stack's state.")] = Path(".jitgate/dev"),
    policy: Annotated[
        Path | None,
        typer.Option(help="Your own policy over the stack (`issuer: dev`, `upstream: dev:NAME`; docs/gateway.md)."),
    ] = None,
    gateway_port: Annotated[int, _PORT] = 0,
    pg_port: Annotated[int, _PORT] = 0,
    broker_port: Annotated[int, _PORT] = 0,
    metrics_port: Annotated[int, _PORT] = 0,
) -> None:
    """Start moto, a dev OIDC issuer, the broker, sample upstreams, Chroma, Postgres and the gateway; stop on Ctrl-C."""
    from jitgate.devstack.stack import DevPorts, DevStack

    ports = DevPorts(gateway=gateway_port, pg=pg_port, broker=broker_port, metrics=metrics_port)
    stack = DevStack(state_dir, policy_file=policy, ports=ports)
    stopped = threading.Event()
    # Set both handlers before anything starts (a shell that starts us in the background leaves
    # SIGINT ignored), and stop the stack on every way out, Ctrl-C during start included.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    try:
        with out.status("starting the jitgate dev stack") as status:

            def step(name: str) -> None:
                status.update(f"starting: {name}")
                out.print(f"[green]✓[/green] {name}")

            try:
                stack.start(step)
            except Exception as exc:  # a child failed to start: say which; what did start is stopped
                out.print(f"[red]jitgate dev: the stack did not start: {exc}[/red]")
                raise typer.Exit(1) from None
        out.print(f"\n[bold]ready.[/bold] Use it from a shell with:  source {stack.state_dir / 'env.sh'}")
        for name, value in stack.env.items():
            if not name.startswith("AWS_SECRET"):
                out.print(f"  {name}={value}")
        if policy is None:
            out.print("\nthen:  jitgate run -- python examples/rerank_job.py      (Ctrl-C here stops everything)")
            out.print('or:    jitgate run --connection pg-dev -- psql -c "SELECT id FROM candidates LIMIT 3"')
        else:
            out.print(f"\nthen:  jitgate run --connection {stack.env['JITGATE_CONNECTION']} -- YOUR JOB"
                      "      (Ctrl-C here stops everything)")
        while not stopped.wait(0.5):
            pass
    finally:
        out.print("stopping the dev stack")
        stack.stop()


def gateway(
    policy: Annotated[str, typer.Option(envvar="JITGATE_POLICY", help="Policy YAML: a file, or s3://bucket/key.")],
    jwks_url: Annotated[str, typer.Option(envvar="JITGATE_JWKS_URL", help="Broker JWKS URL.")],
    table: Annotated[str, typer.Option(envvar="JITGATE_TABLE", help="DynamoDB table.")],
    bucket: Annotated[str, typer.Option(envvar="JITGATE_BUCKET", help="Audit bucket.")] = "",
    issuer: Annotated[str, typer.Option(envvar="JITGATE_ISSUER", help="Token `iss` (broker URL).")] = "",
    listen_host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    listen_port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    confdir: Annotated[str, typer.Option(envvar="JITGATE_CONFDIR", help="mitmproxy confdir (the gateway CA).")] = "",
    spool_dir: Annotated[str, typer.Option(envvar="JITGATE_SPOOL_DIR")] = "",
    durable_spool: Annotated[
        str, typer.Option(envvar="JITGATE_DURABLE_SPOOL", help="Fleet-shared directory (EFS) for unshipped segments.")
    ] = "",
    upstream_ca: Annotated[str, typer.Option(envvar="JITGATE_UPSTREAM_CA")] = "",
    aws_endpoint: Annotated[str, typer.Option(envvar="AWS_ENDPOINT_URL", help="Local AWS endpoint.")] = "",
    policy_refresh: Annotated[
        str, typer.Option(envvar="JITGATE_POLICY_REFRESH", help="Seconds between policy version checks (0: off).")
    ] = "",
    mask_key_secret: Annotated[
        str, typer.Option(envvar="JITGATE_MASK_KEY_SECRET", help="Secret holding the mask key (tags match fleet-wide).")
    ] = "",
    gateway_id: Annotated[str, typer.Option(envvar="JITGATE_GATEWAY_ID", help="Name in records (default: host).")] = "",
    ca_secret: Annotated[
        str, typer.Option(envvar="JITGATE_CA_SECRET", help="Secret holding the fleet's CA (`jitgate ca init`).")
    ] = "",
    capture: Annotated[str | None, typer.Option(help="Transparently capture this process (eBPF).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Extra mitmproxy option name=value.")] = None,
    pg_listen: Annotated[
        str, typer.Option(envvar="JITGATE_PG_LISTEN", help="HOST:PORT of the Postgres listener (empty: none).")
    ] = "",
    workers: Annotated[
        int | None, typer.Option(envvar="JITGATE_WORKERS", help="Gateway processes on the port; default: one per CPU.")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address of /metrics, /healthz, /readyz.")] = "127.0.0.1",
    metrics_port: Annotated[int, typer.Option(help="Port of /metrics, /healthz, /readyz; -1: off.")] = 9090,
) -> None:
    """Run the gateway in the foreground: mitmdump with the jitgate addon chain and its options."""
    count = workers if workers is not None else (os.cpu_count() or 1)
    if count < 1:
        out.print("[red]jitgate: --workers must be at least 1[/red]")
        raise typer.Exit(2)
    extra: list[str] = []
    if capture:
        reason = capture_unavailable_reason()
        if reason:
            out.print(f"[red]jitgate: {reason}[/red]")
            raise typer.Exit(2)
        extra += ["--mode", f"local:{capture}"]
    if ca_secret:
        confdir = _install_fleet_ca(ca_secret, confdir or "~/.mitmproxy", aws_endpoint)
    options = {
        "confdir": confdir,
        "jitgate_policy": policy,
        "jitgate_jwks_url": jwks_url,
        "jitgate_table": table,
        "jitgate_bucket": bucket,
        "jitgate_issuer": issuer,
        "jitgate_spool_dir": spool_dir,
        "jitgate_durable_spool": durable_spool,
        "jitgate_upstream_ca": upstream_ca,
        "jitgate_aws_endpoint": aws_endpoint,
        "jitgate_pg_listen": pg_listen,
        "jitgate_policy_refresh": policy_refresh,
        "jitgate_mask_key_secret": mask_key_secret,
        "jitgate_gateway_id": gateway_id,
    }
    chosen = {name: value for name, value in options.items() if value}
    for item in set_ or []:
        name, sep, value = item.partition("=")
        if not sep:
            out.print(f"[red]jitgate: --set takes name=value, not {name!r}[/red]")
            raise typer.Exit(2)
        chosen[name] = value  # mitmdump takes one value per option: a later --set wins
    chosen.setdefault("jitgate_metrics_host", metrics_host)
    chosen.setdefault("jitgate_metrics_port", str(metrics_port))
    argv = mitmdump_argv(listen_host=listen_host, listen_port=listen_port, options=chosen, extra_args=extra)
    sys.stdout.flush()
    if count == 1:
        os.execv(argv[0], argv)  # noqa: S606  (argv is ours; the gateway replaces this process)
    from jitgate.commands.gateway_workers import supervise

    try:
        metrics_at = (chosen["jitgate_metrics_host"], int(chosen["jitgate_metrics_port"]))
    except ValueError:
        out.print("[red]jitgate: jitgate_metrics_port must be a port number (-1: off)[/red]")
        raise typer.Exit(2) from None
    # Each worker gets its own gateway id and spool under these (the supervisor replaces those options).
    supervise(
        argv, count, gateway_id=chosen.get("jitgate_gateway_id", ""), spool_dir=chosen.get("jitgate_spool_dir", ""),
        listen=(listen_host, listen_port), metrics=metrics_at,
    )


def _install_fleet_ca(secret: str, confdir: str, aws_endpoint: str) -> str:
    """Write the fleet's CA from `secret` into `confdir` before mitmdump reads it; stop if it cannot be."""
    from jitgate.commands.ca import secrets_client
    from jitgate.errors import JitgateError
    from jitgate.gateway_ca import install, load_secret

    path = Path(confdir).expanduser()
    try:
        digest = install(path, load_secret(secrets_client(aws_endpoint, ""), secret))
    except JitgateError as exc:  # never a new CA of our own: clients would not trust it
        out.print(f"[red]jitgate gateway: {exc.code}: {exc.message}[/red]")
        raise typer.Exit(1) from None
    print(json.dumps({"level": "info", "logger": "jitgate.gateway", "event": "ca", "msg": f"fleet CA {digest}"}))
    return str(path)
