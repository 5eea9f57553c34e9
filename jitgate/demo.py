"""`make demo`: the local stack, an unmodified rerank job under `jitgate run`, and what happened.

Shows, in order: a rerank answered; a request carrying an AWS key blocked; an e-mail in a
returned document masked; the token revoked when the job ended and refused afterwards; an audit
query naming the user and the documents; a pgvector nearest-neighbour SELECT through psql on the
Postgres path, a column outside the grant refused, an e-mail in a result masked, and a maintainer's
`DELETE FROM candidates` held, listed to a search lead and denied; a real Chroma server read by the real chromadb
client under `jitgate run` (fields cut, PII masked, another collection refused). Exits non-zero if
any step fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from jitgate.devstack.policy import APPROVER_GROUP, CI_CLAIMS, MAINTAINER_SUB, READER_SUB
from jitgate.devstack.stack import DevStack

REPO = Path(__file__).resolve().parents[1]
JOB = REPO / "examples" / "rerank_job.py"
STORE_JOB = REPO / "examples" / "chroma_job.py"
# `:email:` inside a mask tag is not an emoji; logs and CI get a table wide enough to read.
console = Console(emoji=False, width=None if sys.stdout.isatty() else 150)


class DemoFailed(Exception):
    """A demo step did not show what it should."""


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise DemoFailed(what)
    console.print(f"  [green]✓[/green] {escape(what)}")


def _wait_for(probe: Callable[[], Any], *, timeout: float, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def _run_job(
    stack: DevStack, token_file: Path, *, connection: str = "cohere-test", job: Path = JOB,
    **env_over: str,
) -> tuple[int, dict[str, dict[str, Any]], str]:
    env = {**os.environ, **stack.env, "DEMO_TOKEN_FILE": str(token_file), **env_over}
    jitgate = str(Path(sys.executable).with_name("jitgate"))
    argv = [jitgate, "run", "--connection", connection, "--ttl", "10m", "--", sys.executable, str(job)]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    steps = {}
    for line in proc.stdout.splitlines():
        if line.startswith("STEP "):
            data = json.loads(line[5:])
            steps[data["step"]] = data
    return proc.returncode, steps, proc.stderr


PG_QUERY = "SELECT id, embedding <-> '[0,0,0,0,0,0,0,0]' AS distance FROM candidates ORDER BY distance LIMIT 3"


def _psql_argv(sql: str) -> list[str]:
    jitgate = str(Path(sys.executable).with_name("jitgate"))
    return [jitgate, "run", "--connection", "pg-dev", "--", "psql", "-X", "-At", "-c", sql]


def _run_psql(stack: DevStack, sql: str) -> subprocess.CompletedProcess[str]:
    """psql, unchanged, under `jitgate run --connection pg-dev` as the reranker service account."""
    env = {**os.environ, **stack.env, "JITGATE_DEV_SUBJECT": READER_SUB, "PGUSER": "reranker"}
    return subprocess.run(_psql_argv(sql), env=env, capture_output=True, text=True, timeout=120, check=False)


def _approvals(stack: DevStack, *args: str) -> subprocess.CompletedProcess[str]:
    """`jitgate approvals ...` as a search lead (the dev issuer's token with the approvers' group)."""
    claims = json.dumps({**CI_CLAIMS, "groups": [APPROVER_GROUP]})
    env = {**os.environ, **stack.env, "JITGATE_DEV_SUBJECT": "lead-demo", "JITGATE_DEV_CLAIMS": claims}
    jitgate = str(Path(sys.executable).with_name("jitgate"))
    return subprocess.run([jitgate, "approvals", *args], env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def _held_delete(stack: DevStack) -> None:
    """A maintainer's DELETE FROM candidates waits; a search lead lists it and denies it."""
    env = {**os.environ, **stack.env, "JITGATE_DEV_SUBJECT": MAINTAINER_SUB, "PGUSER": "janitor"}
    job = subprocess.Popen(_psql_argv("DELETE FROM candidates"), env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        def pending() -> list[dict[str, Any]]:
            listed = _approvals(stack, "list", "--json")
            items = json.loads(listed.stdout) if listed.returncode == 0 and listed.stdout.strip() else []
            return [a for a in items if a.get("kind") == "hold" and a.get("requester") == MAINTAINER_SUB]

        holds = _wait_for(lambda: pending() or job.poll() is not None, timeout=60)
        if not isinstance(holds, list) or job.poll() is not None:
            job.kill()
            out, err = job.communicate()
            console.print(escape((out + err)[-2000:]))
            holds = []
        _check(bool(holds) and job.poll() is None, "the DELETE waits: held for a search lead, nothing ran")
        hold = holds[0]
        listed = _approvals(stack, "list")
        line = next((x for x in listed.stdout.splitlines() if x.startswith(hold["id"])), "")
        console.print(f"  [dim]{escape(line)}[/dim]")
        _check("statement: DELETE FROM candidates" in line and "why: no_where:delete" in line,
               "`jitgate approvals list` shows the statement, its table, the requester and why")
        denied = _approvals(stack, "deny", hold["id"], "--reason", "demo: every row, no ticket")
        _check(denied.returncode == 0, f"a search lead denied it: {denied.stdout.strip()}")
        _, stderr = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
    _check(job.returncode != 0 and "jitgate approval_denied" in stderr,
           "psql got an ErrorResponse (42501 approval_denied)")
    count = _run_psql(stack, "SELECT count(*) FROM candidates")
    _check(count.stdout.strip() == "24", f"every candidate is still there ({count.stdout.strip()} rows)")


def _revoked_refusal(stack: DevStack, token: str) -> tuple[int, str]:
    proxy = f"http://jit:{token}@{stack.env['JITGATE_GATEWAY']}"
    with httpx.Client(proxy=proxy, verify=stack.env["JITGATE_CA_BUNDLE"], timeout=10) as client:
        resp = client.post(
            "https://api.cohere.com/v1/rerank",
            json={"model": "rerank-v3.5", "query": "q", "documents": ["d"]},
            headers={"Authorization": f"Bearer {token}"},
        )
    try:
        code = str(resp.json().get("code", ""))
    except ValueError:
        code = ""
    return resp.status_code, code


def _audit(stack: DevStack, document: str) -> list[dict[str, Any]]:
    env = {**os.environ, **stack.env}
    jitgate = str(Path(sys.executable).with_name("jitgate"))
    cache = Path(stack.env["JITGATE_STATE_DIR"]) / "audit-cache"
    argv = [jitgate, "audit", "who-reranked", document, "--cache", str(cache), "--format", "json"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        return []
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip().startswith("{")]


def run(state_dir: Path) -> None:
    console.rule("[bold]jitgate demo")
    console.print("starting the local stack (moto, OIDC issuer, broker, upstream, Chroma, gateway)")
    with DevStack(state_dir, segment_ms=500) as stack:
        console.print(f"  [green]✓[/green] stack ready in {state_dir}")
        token_file = state_dir / "demo-token"

        console.rule("1. an unmodified cohere job under `jitgate run`")
        rc, steps, stderr = _run_job(stack, token_file)
        if rc != 0:
            console.print(stderr[-2000:])
        _check(rc == 0, f"the job exited 0 (got {rc})")
        answered = steps.get("rerank_answered", {})
        _check(bool(answered.get("ranking")), f"rerank answered: ranking {answered.get('ranking')}")

        console.rule("2. a request carrying an AWS key")
        leak = steps.get("leak_blocked", {})
        _check(
            leak.get("status") == 403 and leak.get("code") == "leak_blocked" and leak.get("echoed") is False,
            f"blocked with 403 {leak.get('code')}, the key not echoed",
        )

        console.rule("3. an e-mail in a returned document")
        docs = steps.get("email_in_returned_document", {}).get("documents", [])
        masked = bool(docs) and all("@example.com" not in d and "[REDACTED:email:" in d for d in docs)
        _check(masked, f"masked: {docs[0] if docs else None!r}")

        console.rule("4. the token after the job")
        _check("revoked" in stderr, "jitgate run revoked the token when the job ended")
        token = token_file.read_text().strip()
        # Gateways learn of revocations within the staleness bound (default 5 s).
        _wait_for(lambda: _revoked_refusal(stack, token) == (403, "token_revoked"), timeout=10)
        status, code = _revoked_refusal(stack, token)
        _check(status == 403 and code == "token_revoked", f"the token is refused afterwards: {status} {code}")

        console.rule("5. who reranked which document (DuckDB over the audit bucket)")
        document = "Blue whales are the largest animals known to have lived."
        rows = _wait_for(lambda: _audit(stack, document), timeout=30, every=1.0)
        _check(bool(rows), "the audit query found the rerank calls")
        fingerprint = hashlib.sha256(document.encode()).hexdigest()
        table = Table("time", "user (OIDC sub)", "token jti", "connection", "document", "position", "decision")
        for row in rows[:5]:
            table.add_row(
                str(row.get("ts", ""))[:19],
                str(row.get("sub", "")),
                str(row.get("jti", ""))[:12],
                str(row.get("conn", "")),
                f"sha256 {fingerprint[:12]}…",
                str(row.get("doc_index", "")),
                str(row.get("decision", "")),
            )
        console.print(table)
        subjects = {row.get("sub") for row in rows}
        _check(stack.env["JITGATE_DEV_SUBJECT"] in subjects, f"the audit names the user {subjects}")

        console.rule("6. pgvector nearest neighbours through psql under `jitgate run --connection pg-dev`")
        near = _run_psql(stack, PG_QUERY)
        if near.returncode != 0:
            console.print(near.stderr[-2000:])
        ids = [line.split("|", 1)[0] for line in near.stdout.split()]
        _check(near.returncode == 0 and len(ids) == 3, f"psql answered the 3 nearest candidates: ids {ids}")
        refused = _run_psql(stack, "SELECT owner_email FROM candidates LIMIT 1")
        _check(
            refused.returncode != 0 and "jitgate column_not_allowed" in refused.stderr,
            "a column outside the grant is refused (42501 column_not_allowed)",
        )
        contact = _run_psql(stack, "SELECT body FROM candidates WHERE id = 3")
        console.print(f"  [dim]{escape(contact.stdout.strip())}[/dim]")
        _check("[REDACTED:email:" in contact.stdout and "@example" not in contact.stdout,
               "an e-mail in a psql result is masked")
        _held_delete(stack)
        console.rule("7. the real Chroma server and client under `jitgate run --connection chroma-dev`")
        rc, steps, stderr = _run_job(stack, token_file, connection="chroma-dev", job=STORE_JOB,
                                     JITGATE_DEV_SUBJECT=READER_SUB)
        if rc != 0:
            console.print(stderr[-2000:])
        _check(rc == 0, f"the store job exited 0 (got {rc})")
        answer = steps.get("store_answered", {})
        docs = answer.get("documents") or []
        _check(bool(docs) and "[REDACTED:email:" in docs[0], f"a document answered, its e-mail masked: {docs[:1]!r}")
        _check(answer.get("metadatas") is None, "metadata withheld: the reader's fields are ids, documents, distances")
        _check(steps.get("other_collection", {}).get("refused") is True, "another collection: collection_not_allowed")
    console.rule("[bold green]demo passed")


def main() -> None:
    state = Path(os.environ.get("JITGATE_DEMO_DIR") or tempfile.mkdtemp(prefix="jitgate-demo-"))
    try:
        run(state)
    except DemoFailed as exc:
        console.print(f"[red]demo failed: {exc}[/red]")
        sys.exit(1)


if __name__ == "__main__":
    main()
