"""`jitgate sessions export`: recorded flows as a mitmproxy flow file for an investigator.

The flows are rebuilt from session records, so they carry what the record kept: the masked
bodies (capped, vectors digested), status, timing and client address — never headers, the
token or the injected credential. Every record field rides along in `flow.metadata["jitgate"]`
and a one-line summary in the flow comment; `mitmweb -r flows.mitm` opens the file.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from jitgate import audit
from jitgate.commands.audit import DEFAULT_CACHE, BucketOpt, CacheOpt, EndpointOpt, NoSyncOpt, RegionOpt, Source

app = typer.Typer(no_args_is_help=True, help="Recorded sessions.")

_BY_FLOW = "SELECT * FROM sessions_unique WHERE flow_id = ? ORDER BY ts, flow_id"
_BY_JTI = "SELECT * FROM sessions_unique WHERE jti = ? ORDER BY ts, flow_id"


def _json_headers() -> Any:
    from mitmproxy import http

    return http.Headers(content_type="application/json")


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _address(client: str | None) -> tuple[str, int]:
    if client and ":" in client:
        host, _, port = client.rpartition(":")
        if port.isdigit():
            return host.strip("[]"), int(port)
    return "0.0.0.0", 0  # noqa: S104 — an unknown peer, not a bind address


def record_to_flow(record: dict[str, Any]) -> Any:
    """A mitmproxy HTTPFlow standing for one session record."""
    from mitmproxy import connection, flow, http

    start = _epoch(record["ts"])
    end = start + (record.get("latency_ms") or 0.0) / 1000
    client = connection.Client(
        peername=_address(record.get("client")),
        sockname=("0.0.0.0", 0),  # noqa: S104
        timestamp_start=start,
    )
    server = connection.Server(address=(record["host"], 443))
    f = http.HTTPFlow(client, server)
    f.id = record["flow_id"]
    request = http.Request.make(
        record["method"],
        f"https://{record['host']}{record['path']}",
        (record.get("request_body") or "").encode(),
        _json_headers(),
    )
    request.timestamp_start = start
    request.timestamp_end = start
    f.request = request
    if record.get("status"):
        response = http.Response.make(record["status"], (record.get("response_body") or "").encode(), _json_headers())
        response.timestamp_start = end
        response.timestamp_end = end
        f.response = response
    else:
        f.error = flow.Error(record.get("error") or "no response")
    f.metadata["jitgate"] = {k: v for k, v in record.items() if k not in ("request_body", "response_body")}
    f.comment = " ".join(
        str(x)
        for x in (record.get("sub"), record.get("operation"), record.get("decision"), record.get("error"))
        if x is not None
    )
    return f


def export_flows(records: list[dict[str, Any]], out: Path) -> int:
    from mitmproxy import io

    with out.open("wb") as fh:
        writer = io.FlowWriter(fh)  # type: ignore[no-untyped-call]
        for record in records:
            writer.add(record_to_flow(record))
    return len(records)


@app.command("export")
def export(
    out: Annotated[Path, typer.Option("-o", "--output", help="The flow file to write (e.g. flows.mitm).")],
    flow_id: Annotated[str, typer.Option("--flow", help="Export this flow id.")] = "",
    jti: Annotated[str, typer.Option("--jti", help="Export every flow of this token.")] = "",
    bucket: BucketOpt = "",
    endpoint_url: EndpointOpt = "",
    region: RegionOpt = "",
    cache: CacheOpt = DEFAULT_CACHE,
    no_sync: NoSyncOpt = False,
) -> None:
    """Write the recorded flows of one flow id or one token as a mitmproxy flow file."""
    if bool(flow_id) == bool(jti):
        raise typer.BadParameter("give exactly one of --flow or --jti")
    con = Source(bucket, endpoint_url, region, cache, no_sync).connect()
    sql = _BY_FLOW if flow_id else _BY_JTI
    result = audit.run_duckdb(con, sql, [flow_id or jti])
    records = [json.loads(json.dumps(dict(zip(result.columns, row, strict=True)), default=str)) for row in result.rows]
    if not records:
        Console(stderr=True).print("[red]no recorded flow matches[/red]")
        raise typer.Exit(1)
    n = export_flows(records, out)
    Console(stderr=True).print(f"wrote {n} flow(s) to {out}; open with: mitmweb -r {out}")
