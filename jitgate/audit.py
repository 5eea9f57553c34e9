"""Audit queries over session records and token events: DuckDB locally, Athena in production.

The bucket's objects (`sessions/dt=…/hour=…/*.jsonl.gz`, `token-events/dt=…/*.jsonl`) are
pulled into a local cache (from S3 or a moto server) and read by DuckDB with the exact columns
of the writers (`jitgate.records.COLUMNS`, `jitgate.events.glue_columns()`), so a query that
runs here runs on Athena over the Glue tables. Every named query reads `sessions_unique`: the
sessions with the rare duplicate (a segment shipped twice under different keys) dropped by
`record_id`. DuckDB gets it as a view; Athena gets it as a CTE in front of the query text.

Both engines take `?` positional parameters, so user text never becomes SQL.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from jitgate.records import COLUMNS, PARTITIONS, duckdb_columns

SESSIONS_PREFIX = "sessions/"
EVENTS_PREFIX = "token-events/"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
ATHENA_DAYS = 30  # partitions the Athena named queries read

_DEDUP = (
    "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY record_id ORDER BY ts) AS dup_rank "
    "FROM sessions) WHERE dup_rank = 1"
)


SINCE = "{since}"  # in a query's text: the first day partition of its window


def _since(days: int) -> str:
    """The first `dt` of the last `days` days, as SQL both Athena (Trino) and DuckDB evaluate."""
    # `days` goes through int(): nothing from outside reaches the SQL text.
    return f"CAST(CAST(current_date - INTERVAL '{int(days)}' DAY AS DATE) AS VARCHAR)"


@dataclass(frozen=True)
class NamedQuery:
    name: str
    description: str
    sql: str  # reads `sessions_unique` and `token_events`; `?` for each parameter; SINCE for the window
    params: tuple[str, ...] = ()
    days: int = ATHENA_DAYS  # the window: day partitions read

    def athena_sql(self, days: int | None = None) -> str:
        """The query's one text, run by Athena (the template's named query) and by `jitgate audit`
        on DuckDB alike: `sessions_unique` becomes a CTE over the `sessions` table.

        The CTE keeps the last `days` days of partitions (the query's own window by default), so
        partition projection prunes the scan (Athena bills by bytes read); SINCE in the text
        (a `token_events` filter) stands for the same first day.
        """
        since = _since(self.days if days is None else days)
        ranked = "SELECT *, row_number() OVER (PARTITION BY record_id ORDER BY ts) AS dup_rank FROM sessions "
        dedup = f"SELECT * FROM ({ranked}WHERE dt >= {since}) WHERE dup_rank = 1"  # noqa: S608
        body = self.sql.strip().replace(SINCE, since)
        if body[:5].upper() == "WITH ":
            return f"WITH sessions_unique AS ({dedup}),\n{body[5:]}"
        return f"WITH sessions_unique AS ({dedup})\n{body}"


NAMED_QUERIES: dict[str, NamedQuery] = {
    q.name: q
    for q in (
        NamedQuery(
            "who-reranked",
            "Who sent a document (by its SHA-256 fingerprint) to a reranker, with which token and query.",
            """SELECT ts, sub, jti, job, conn, gateway, host, path, rerank_query,
       array_position(doc_sha256, ?) - 1 AS doc_index, doc_count, status, decision, flow_id
FROM sessions_unique
WHERE contains(doc_sha256, ?)
ORDER BY ts, flow_id""",
            ("sha256", "sha256"),
        ),
        NamedQuery(
            "user-activity",
            "Requests per user per day: tokens used, operations, documents, blocked and held requests.",
            """SELECT dt AS day, sub, count(*) AS requests, count(DISTINCT jti) AS tokens,
       count_if(operation = 'rerank') AS reranks, coalesce(sum(doc_count), 0) AS documents,
       count_if(decision = 'blocked') AS blocked, count_if(decision IN ('held', 'approved', 'denied')) AS held,
       sum(request_bytes) AS request_bytes, sum(response_bytes) AS response_bytes
FROM sessions_unique
GROUP BY dt, sub
ORDER BY day, sub""",
        ),
        NamedQuery(
            "blocked-leaks",
            "Requests and answers in which leak_guard found a secret or PII, and what it did.",
            """SELECT s.ts, s.sub, s.jti, s.conn, s.host, s.path, s.decision, s.status,
       f.type AS finding, f.kind AS kind, f.location AS location, f.action AS action, f.tag AS tag, s.flow_id
FROM sessions_unique AS s
CROSS JOIN UNNEST(s.findings) AS t(f)
WHERE f.action <> 'allow'
ORDER BY s.ts, s.flow_id, finding""",
        ),
        NamedQuery(
            "who-read-tables",
            "Postgres: who read or wrote which table, per day: statements, rows, refusals, reads and writes.",
            """SELECT s.dt AS day, s.sub, s.conn, t.tbl AS table_name, count(*) AS statements,
       coalesce(sum(s.rows), 0) AS rows, count_if(s.decision = 'blocked') AS refused,
       count_if(s.operation = 'select') AS selects, count_if(s.operation IN ('insert', 'update', 'delete')) AS writes,
       count(DISTINCT s.jti) AS tokens
FROM sessions_unique AS s
CROSS JOIN UNNEST(s.tables) AS t(tbl)
WHERE s.method = 'SQL'
GROUP BY s.dt, s.sub, s.conn, t.tbl
ORDER BY day, s.sub, table_name""",
        ),
        NamedQuery(
            "held-operations",
            "Risky operations held for a human, and how each was decided (approved, denied, held).",
            """SELECT ts, sub, jti, apv, conn, operation, collection, host, path, decision, status, error, flow_id
FROM sessions_unique
WHERE decision IN ('held', 'approved', 'denied') OR apv IS NOT NULL
ORDER BY ts, flow_id""",
        ),
        NamedQuery(
            "tokens-issued-vs-used",
            "Every token the broker issued, and how many requests went through a gateway with it.",
            """WITH issued AS (
    SELECT jti, sub, conn, grant_name, event_time AS issued_at, expires_at
    FROM token_events WHERE event_type = 'issued'
), used AS (
    SELECT jti, count(*) AS requests, count_if(decision = 'blocked') AS blocked, min(ts) AS first_use,
           max(ts) AS last_use
    FROM sessions_unique WHERE jti IS NOT NULL GROUP BY jti
)
SELECT i.jti, i.sub, i.conn, i.grant_name, i.issued_at, i.expires_at, coalesce(u.requests, 0) AS requests,
       coalesce(u.blocked, 0) AS blocked, u.first_use, u.last_use
FROM issued AS i LEFT JOIN used AS u ON i.jti = u.jti
ORDER BY i.issued_at, i.jti""",
        ),
        NamedQuery(
            "tokens-by-subject",
            "Tokens issued, denied and revoked per subject and connection, last 7 days.",
            """SELECT sub, conn, event_type, code, count(*) AS n
FROM token_events
WHERE dt >= {since}
GROUP BY sub, conn, event_type, code
ORDER BY n DESC, sub, conn, event_type, code""",
            days=7,
        ),
    )
}


def fingerprint_arg(text_or_sha: str) -> str:
    """A document fingerprint from what an investigator has: the hex SHA-256 or the text itself."""
    candidate = text_or_sha.strip().lower()
    if _SHA256.match(candidate):
        return candidate
    return hashlib.sha256(text_or_sha.encode()).hexdigest()


def bind(query: NamedQuery, args: dict[str, str]) -> list[str]:
    missing = [p for p in query.params if p not in args]
    if missing:
        raise ValueError(f"query {query.name} needs {', '.join(missing)}")
    return [args[p] for p in query.params]


# ---- the local cache and DuckDB --------------------------------------------------------------


def day_prefixes(prefixes: Sequence[str], *, days: int, today: date) -> list[str]:
    """The Hive day partitions (`<prefix>dt=YYYY-MM-DD/`) of the last `days` days up to `today`."""
    return [
        f"{prefix}dt={(today - timedelta(days=n)).isoformat()}/" for prefix in prefixes for n in range(days - 1, -1, -1)
    ]


def sync_cache(
    s3: Any,
    bucket: str,
    cache: Path,
    prefixes: Sequence[str] = (SESSIONS_PREFIX, EVENTS_PREFIX),
    *,
    days: int | None = None,
    today: date | None = None,
) -> int:
    """Download the bucket's audit objects missing from `cache` (same keys); return how many.

    `days` limits the pull to the last `days` day partitions (listed prefix by prefix), for
    buckets too big to mirror.
    """
    if days is not None:
        prefixes = day_prefixes(prefixes, days=days, today=today or datetime.now(UTC).date())
    fetched = 0
    paginator = s3.get_paginator("list_objects_v2")
    for prefix in prefixes:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key: str = obj["Key"]
                if ".." in key.split("/") or key.startswith("/"):
                    continue
                target = cache / key
                if target.exists() and target.stat().st_size == obj["Size"]:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(target.name + ".part")
                s3.download_file(bucket, key, str(tmp))
                tmp.replace(target)
                fetched += 1
    return fetched


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _struct_literal(columns: dict[str, str]) -> str:
    return "{" + ", ".join(f"{_sql_string(k)}: {_sql_string(v)}" for k, v in columns.items()) + "}"


def _event_columns() -> tuple[tuple[str, str], ...]:
    from jitgate.events import glue_columns

    return tuple(glue_columns())


def _relation(
    con: Any, name: str, pattern: Path, columns: tuple[tuple[str, str], ...], partitions: Sequence[str]
) -> None:
    cols = duckdb_columns(columns)
    if any(pattern.parent.parent.glob("**/" + pattern.name)):
        # Names are constants; the path and the column types are quoted by _sql_string.
        source = (
            f"read_json({_sql_string(str(pattern))}, format = 'newline_delimited', "
            f"columns = {_struct_literal(cols)}, hive_partitioning = true, hive_types_autocast = false)"
        )
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {source}")  # noqa: S608
    else:  # no objects yet: an empty relation with the same columns
        typed = ", ".join(
            [f"CAST(NULL AS {t}) AS {n}" for n, t in cols.items()]
            + [f"CAST(NULL AS VARCHAR) AS {p}" for p in partitions]
        )
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT {typed} WHERE false")


def connect(cache: Path) -> Any:
    """A DuckDB connection with `sessions`, `sessions_unique` and `token_events` over the cache."""
    import duckdb

    con = duckdb.connect()
    partitions = [p for p, _ in PARTITIONS]
    _relation(con, "sessions", cache / "sessions" / "**" / "*.jsonl.gz", COLUMNS, partitions)
    _relation(con, "token_events", cache / "token-events" / "**" / "*.jsonl", _event_columns(), ["dt"])
    con.execute(f"CREATE OR REPLACE VIEW sessions_unique AS SELECT * EXCLUDE (dup_rank) FROM ({_DEDUP})")  # noqa: S608
    return con


@dataclass(frozen=True)
class Result:
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


def run_duckdb(con: Any, sql: str, params: Sequence[str] = ()) -> Result:
    cur = con.execute(sql, list(params))
    return Result(tuple(d[0] for d in cur.description or ()), cur.fetchall())


# ---- Athena ------------------------------------------------------------------------------------


def run_athena(
    athena: Any,
    sql: str,
    params: Sequence[str] = (),
    *,
    workgroup: str,
    database: str,
    poll: float = 1.0,
    timeout: float = 300.0,
) -> Result:
    """Run `sql` on Athena in `workgroup` (which names the result location) and fetch every row."""
    kwargs: dict[str, Any] = {
        "QueryString": sql,
        "WorkGroup": workgroup,
        "QueryExecutionContext": {"Database": database},
    }
    if params:
        kwargs["ExecutionParameters"] = [_sql_string(p) for p in params]
    qid = athena.start_query_execution(**kwargs)["QueryExecutionId"]
    deadline = time.monotonic() + timeout
    while True:
        status = athena.get_query_execution(QueryExecutionId=qid)["QueryExecution"]["Status"]
        state = status["State"]
        if state == "SUCCEEDED":
            break
        if state in ("FAILED", "CANCELLED"):
            raise RuntimeError(f"Athena query {state.lower()}: {status.get('StateChangeReason', '')}")
        if time.monotonic() > deadline:
            raise TimeoutError("Athena query did not finish in time")
        time.sleep(poll)
    columns: tuple[str, ...] = ()
    rows: list[tuple[Any, ...]] = []
    first = True
    for page in athena.get_paginator("get_query_results").paginate(QueryExecutionId=qid):
        if not columns:
            columns = tuple(c["Name"] for c in page["ResultSet"]["ResultSetMetadata"]["ColumnInfo"])
        for row in page["ResultSet"]["Rows"]:
            values = tuple(d.get("VarCharValue") for d in row["Data"])
            if first:  # Athena repeats the header as the first row
                first = False
                if values == columns:
                    continue
            rows.append(values)
    return Result(columns, rows)
