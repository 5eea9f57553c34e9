"""`jitgate audit`: ask the session records who did what — DuckDB locally, `--athena` in production.

Locally the bucket's audit objects are pulled into a cache (`--cache`, from S3 or the moto server
named by `--endpoint-url` / AWS_ENDPOINT_URL) and queried with DuckDB. `--athena` runs the same
named query on Athena (workgroup and Glue database of the SAM stack) with boto3.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from jitgate import audit

app = typer.Typer(no_args_is_help=True, help="Query session records and token events (DuckDB or Athena).")

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jitgate" / "audit"

BucketOpt = Annotated[str, typer.Option("--bucket", envvar="JITGATE_BUCKET", help="Audit bucket.")]
EndpointOpt = Annotated[
    str, typer.Option("--endpoint-url", envvar="AWS_ENDPOINT_URL", help="S3 endpoint (a local moto server).")
]
RegionOpt = Annotated[str, typer.Option("--region", envvar="AWS_REGION", help="AWS region.")]
CacheOpt = Annotated[Path, typer.Option("--cache", help="Local copy of the bucket's audit objects.")]
NoSyncOpt = Annotated[bool, typer.Option("--no-sync", help="Query the cache as it is, without pulling new objects.")]
DaysOpt = Annotated[
    int,
    typer.Option(
        "--days", envvar="JITGATE_AUDIT_DAYS",
        help="Pull and query the last N day partitions (0: pull all; a named query reads its window, as on Athena).",
    ),
]
AthenaOpt = Annotated[bool, typer.Option("--athena", help="Run on Athena over the Glue tables instead of DuckDB.")]
WorkgroupOpt = Annotated[
    str, typer.Option("--workgroup", envvar="JITGATE_ATHENA_WORKGROUP", help="Athena workgroup (names the output).")
]
DatabaseOpt = Annotated[str, typer.Option("--database", envvar="JITGATE_GLUE_DATABASE", help="Glue database.")]
FormatOpt = Annotated[str, typer.Option("--format", help="table, json (one object per line) or csv.")]


@dataclass(frozen=True)
class Source:
    bucket: str = ""
    endpoint_url: str = ""
    region: str = ""
    cache: Path = DEFAULT_CACHE
    no_sync: bool = False
    days: int = 0

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(  # type: ignore[call-overload]
            service, endpoint_url=self.endpoint_url or None, region_name=self.region or "us-east-1"
        )

    def connect(self) -> Any:
        """A DuckDB connection over the cache, pulled up to date from the bucket first."""
        if not self.no_sync:
            if not self.bucket:
                raise typer.BadParameter("give --bucket (or JITGATE_BUCKET), or --no-sync to use the cache as it is")
            audit.sync_cache(self.client("s3"), self.bucket, self.cache, days=self.days or None)
        return audit.connect(self.cache)


def _print(result: audit.Result, fmt: str) -> None:
    if fmt == "json":
        for row in result.rows:
            sys.stdout.write(json.dumps(dict(zip(result.columns, row, strict=True)), default=str) + "\n")
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(result.columns)
        writer.writerows(result.rows)
    elif fmt == "table":
        table = Table(*result.columns)
        for row in result.rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        Console(width=max(120, len(result.columns) * 14)).print(table)
        Console(stderr=True).print(f"{len(result.rows)} rows")
    else:
        raise typer.BadParameter("--format must be table, json or csv")


def _run(
    sql: str,
    params: list[str],
    *,
    source: Source,
    athena: bool,
    workgroup: str,
    database: str,
    fmt: str,
) -> None:
    try:
        if athena:
            result = audit.run_athena(source.client("athena"), sql, params, workgroup=workgroup, database=database)
        else:
            result = audit.run_duckdb(source.connect(), sql, params)
    except typer.BadParameter:
        raise
    except Exception as exc:  # duckdb / Athena / S3 errors: one line, exit 1
        Console(stderr=True).print(f"[red]query failed[/red]: {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None
    _print(result, fmt)


@app.command("sql")
def sql_command(
    sql: Annotated[str, typer.Argument(help="SQL over sessions, sessions_unique and token_events.")],
    bucket: BucketOpt = "",
    endpoint_url: EndpointOpt = "",
    region: RegionOpt = "",
    cache: CacheOpt = DEFAULT_CACHE,
    no_sync: NoSyncOpt = False,
    days: DaysOpt = 0,
    athena: AthenaOpt = False,
    workgroup: WorkgroupOpt = "jitgate",
    database: DatabaseOpt = "jitgate",
    fmt: FormatOpt = "table",
) -> None:
    """Run SQL on DuckDB over the bucket's records (or on Athena with --athena) and print a table.

    Relations: sessions, sessions_unique (duplicates dropped by record_id) and token_events.
    """
    # On Athena too, `sessions_unique` means the deduplicated sessions (a CTE in front of the SQL).
    # Ad-hoc SQL reads every partition pulled; on Athena, `sessions_unique` is the dedup CTE in front.
    _run(
        audit.NamedQuery("sql", "ad-hoc", sql).athena_sql() if athena else sql,
        [],
        source=Source(bucket, endpoint_url, region, cache, no_sync, days),
        athena=athena,
        workgroup=workgroup,
        database=database,
        fmt=fmt,
    )


@app.command("who-reranked")
def who_reranked(
    document: Annotated[str, typer.Argument(help="The document's text, or its hex SHA-256 fingerprint.")],
    bucket: BucketOpt = "",
    endpoint_url: EndpointOpt = "",
    region: RegionOpt = "",
    cache: CacheOpt = DEFAULT_CACHE,
    no_sync: NoSyncOpt = False,
    days: DaysOpt = 0,
    athena: AthenaOpt = False,
    workgroup: WorkgroupOpt = "jitgate",
    database: DatabaseOpt = "jitgate",
    fmt: FormatOpt = "table",
) -> None:
    """Who sent this document to a reranker: user, token, job, query and the document's position."""
    q = audit.NAMED_QUERIES["who-reranked"]
    params = audit.bind(q, {"sha256": audit.fingerprint_arg(document)})
    _run(
        q.athena_sql(days or None),
        params,
        source=Source(bucket, endpoint_url, region, cache, no_sync, days),
        athena=athena,
        workgroup=workgroup,
        database=database,
        fmt=fmt,
    )


def _register_named(name: str) -> None:
    q = audit.NAMED_QUERIES[name]

    def command(
        bucket: BucketOpt = "",
        endpoint_url: EndpointOpt = "",
        region: RegionOpt = "",
        cache: CacheOpt = DEFAULT_CACHE,
        no_sync: NoSyncOpt = False,
        days: DaysOpt = 0,
        athena: AthenaOpt = False,
        workgroup: WorkgroupOpt = "jitgate",
        database: DatabaseOpt = "jitgate",
        fmt: FormatOpt = "table",
    ) -> None:
        _run(
            q.athena_sql(days or None),
            [],
            source=Source(bucket, endpoint_url, region, cache, no_sync, days),
            athena=athena,
            workgroup=workgroup,
            database=database,
            fmt=fmt,
        )

    app.command(name, help=q.description)(command)


for _name, _query in audit.NAMED_QUERIES.items():
    if not _query.params:
        _register_named(_name)


@app.command("queries")
def queries(athena: AthenaOpt = False) -> None:
    """Print the named queries: the one text Athena runs and `jitgate audit <name>` runs on DuckDB
    (--athena is accepted and changes nothing)."""
    for q in audit.NAMED_QUERIES.values():
        typer.echo(f"-- {q.name}: {q.description} (last {q.days} days)\n{q.athena_sql()};\n")
