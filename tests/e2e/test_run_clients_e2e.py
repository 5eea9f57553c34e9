"""Issue 25 against the real local stack: real SDKs under `jitgate run`, and the checks `jitgate run`
makes before it mints.

Every job here runs under the real CLI, through the real gateway (mitmdump + the chain) to the
vendors' default URLs. The README's client table ("Clients under jitgate run") is checked against
what these jobs observe: a row that says "yes" must work as the job is written; a row that says
"no" must fail that way and work with exactly what its "what to set" cell says.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import boto3
import pytest

from jitgate.devstack.aws import local_broker, seed
from jitgate.devstack.policy import READER_SUB, RERANK_CONNECTIONS
from jitgate.devstack.stack import DevStack
from jitgate.policy import load_policy
from tests.inspect import corpus

JITGATE = str(Path(sys.executable).with_name("jitgate"))
REPO = Path(__file__).resolve().parents[2]
RNG = random.Random()
PREFIX = "RESULT "


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with DevStack(tmp_path_factory.mktemp("clients") / "state") as st:
        yield st


@pytest.fixture(scope="module")
def secret() -> str:
    """A GitHub token of the right form, made now: leak_guard blocks a request that carries it."""
    return corpus.PREFIXED["github_pat"](RNG)


def _run(
    stack: DevStack, connection: str, argv: list[str], *, extra: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    cmd = [JITGATE, "run", "--connection", connection, *(extra or []), "--", *argv]
    return subprocess.run(cmd, env={**os.environ, **stack.env, **(env or {})}, capture_output=True, text=True,
                          timeout=120)


def _result(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = [line for line in proc.stdout.splitlines() if line.startswith(PREFIX)]
    assert lines, f"no result from the job (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    data: dict[str, Any] = json.loads(lines[-1][len(PREFIX):])
    return data


_PY_HEAD = """
import asyncio, json, os
DOCS = ["the blue whale is the largest animal", "a cat sat on the mat"]
LEAKY = DOCS + ["deploy with token " + os.environ["JOB_SECRET"]]
def out(**kw):
    print("RESULT " + json.dumps(kw), flush=True)
"""

# Each job prints one RESULT line: {"ok": top index or None, "error": the client's own exception text}.
JOBS: dict[str, str] = {
    "cohere": """
import cohere
co = cohere.ClientV2()
top = co.rerank(model="rerank-v3.5", query="whale", documents=DOCS).results[0].index
try:
    co.rerank(model="rerank-v3.5", query="whale", documents=LEAKY)
    out(ok=top, error=None)
except Exception as exc:
    out(ok=top, error=f"{type(exc).__name__}: {exc}")
""",
    "voyage_sync": """
import voyageai
try:
    voyageai.Client(max_retries=0).rerank("whale", LEAKY, model="rerank-2")
    out(ok=None, error=None)
except Exception as exc:
    out(ok=None, error=f"{type(exc).__name__}: {exc}")
""",
    "voyage_async": """
import voyageai
if os.environ.get("JOB_FIX"):
    voyageai.proxy = os.environ["HTTPS_PROXY"]
async def main():
    try:
        await voyageai.AsyncClient(max_retries=0).rerank("whale", LEAKY, model="rerank-2")
        out(ok=None, error=None)
    except Exception as exc:
        out(ok=None, error=f"{type(exc).__name__}: {exc}")
asyncio.run(main())
""",
    "aiohttp": """
import aiohttp
async def main():
    trust = os.environ.get("JOB_TRUST_ENV") == "1"
    body = {"model": "rerank-v3.5", "query": "whale", "documents": DOCS}
    headers = {"Authorization": "Bearer " + os.environ["CO_API_KEY"]}
    try:
        async with aiohttp.ClientSession(trust_env=trust) as s:
            async with s.post("https://api.cohere.com/v2/rerank", json=body, headers=headers) as r:
                out(ok=(await r.json())["results"][0]["index"], error=None)
    except Exception as exc:
        out(ok=None, error=f"{type(exc).__name__}: {exc}")
asyncio.run(main())
""",
}

# llama-index's Cohere rerank needs cohere<7: it runs from .venv-llamaindex (`make llamaindex-setup`).
# It reads COHERE_API_KEY, one of the cohere connections' key variables `jitgate run` sets.
LLAMAINDEX = """
from llama_index.core.schema import NodeWithScore, TextNode
from llama_index.postprocessor.cohere_rerank import CohereRerank
rerank = CohereRerank(top_n=1, model="rerank-v3.5", max_retries=1)
def nodes(docs):
    return [NodeWithScore(node=TextNode(text=d)) for d in docs]
top = DOCS.index(rerank.postprocess_nodes(nodes(DOCS), query_str="whale")[0].node.text)
try:
    rerank.postprocess_nodes(nodes(LEAKY), query_str="whale")
    out(ok=top, error=None)
except Exception as exc:
    out(ok=top, error=f"{type(exc).__name__}: {exc}")
"""


@cache
def llamaindex_python() -> str:
    """The python of .venv-llamaindex, made by make (once, then cached) when it is not there."""
    venv = REPO / ".venv-llamaindex"
    if not (venv / ".installed").exists():
        subprocess.run(["make", "-C", str(REPO), "llamaindex-setup"], check=True, capture_output=True, timeout=1200)
    return str(venv / "bin" / "python")


# Node 20's fetch ignores HTTPS_PROXY (Node >= 24 reads it with NODE_USE_ENV_PROXY=1, which
# `jitgate run` sets); what works on Node 20 without a package: a CONNECT tunnel by hand.
NODE_FETCH = """
fetch("https://api.cohere.com/v2/rerank", {method: "POST", headers: {"content-type": "application/json",
  authorization: "Bearer " + process.env.CO_API_KEY}, body: JSON.stringify({model: "m", query: "whale",
  documents: ["the blue whale", "a cat"]})})
  .then(r => r.json()).then(j => console.log("RESULT " + JSON.stringify({ok: j.results[0].index, error: null})),
        e => console.log("RESULT " + JSON.stringify({ok: null, error: String((e.cause && e.cause.code) || e)})));
"""
NODE_CONNECT = """
const http = require("http");
const proxy = new URL(process.env.HTTPS_PROXY);
const auth = "Basic " + Buffer.from(decodeURIComponent(proxy.username) + ":" +
  decodeURIComponent(proxy.password)).toString("base64");
const host = "api.cohere.com";
const body = JSON.stringify({model: "m", query: "whale", documents: ["the blue whale", "a cat"]});
http.request({host: proxy.hostname, port: proxy.port, method: "CONNECT", path: host + ":443",
              headers: {"proxy-authorization": auth}})
  .on("connect", (res, socket) => {
    const req = require("https").request({host, path: "/v2/rerank", method: "POST", agent: false, socket,
      servername: host,
      headers: {"content-type": "application/json", "content-length": Buffer.byteLength(body),
                authorization: "Bearer " + process.env.CO_API_KEY}}, (resp) => {
      let data = ""; resp.on("data", c => data += c);
      resp.on("end", () => { console.log("RESULT " + JSON.stringify({ok: JSON.parse(data).results[0].index,
                                                                    error: null})); process.exit(0); });
    });
    req.end(body);
  })
  .on("error", e => console.log("RESULT " + JSON.stringify({ok: null, error: String(e)})))
  .end();
"""


def _py(stack: DevStack, connection: str, job: str, secret: str, **env: str) -> dict[str, Any]:
    python, code = (llamaindex_python(), LLAMAINDEX) if job == "llamaindex" else (sys.executable, JOBS[job])
    proc = _run(stack, connection, [python, "-c", _PY_HEAD + code], env={"JOB_SECRET": secret, **env})
    assert proc.returncode == 0, proc.stderr
    return _result(proc)


def _gateway_refusal(stack: DevStack, connection: str, url: str, secret: str, key_var: str) -> dict[str, Any]:
    """What the gateway answers the leaky request itself (httpx, which reads the proxy variables)."""
    code = (
        _PY_HEAD
        + "import httpx\n"
        + f"r = httpx.post('{url}', json={{'model': 'm', 'query': 'whale', 'documents': LEAKY}},"
        + f" headers={{'Authorization': 'Bearer ' + os.environ['{key_var}']}})\n"
        + "out(status=r.status_code, body=r.json())\n"
    )
    proc = _run(stack, connection, [sys.executable, "-c", code], env={"JOB_SECRET": secret})
    return _result(proc)


# -- item 6: refusals in each vendor's shape, through its own SDK ------------------------------------


def test_cohere_sdk_works_and_its_exception_carries_jitgates_refusal(stack: DevStack, secret: str) -> None:
    refusal = _gateway_refusal(stack, "cohere-test", "https://api.cohere.com/v2/rerank", secret, "CO_API_KEY")
    assert (refusal["status"], refusal["body"]["code"]) == (403, "leak_blocked")
    got = _py(stack, "cohere-test", "cohere", secret)
    assert got["ok"] == 0
    assert refusal["body"]["message"] in got["error"] and "leak_blocked" in got["error"]
    assert secret not in got["error"]


def test_llamaindex_cohere_rerank_reads_cohere_api_key_and_carries_the_refusal(stack: DevStack, secret: str) -> None:
    refusal = _gateway_refusal(stack, "cohere-test", "https://api.cohere.com/v2/rerank", secret, "COHERE_API_KEY")
    assert (refusal["status"], refusal["body"]["code"]) == (403, "leak_blocked")
    got = _py(stack, "cohere-test", "llamaindex", secret)
    assert got["ok"] == 0, got  # the whale document, ranked by the sample upstream through the gateway
    assert got["error"].startswith("ForbiddenError") and refusal["body"]["message"] in got["error"], got  # an ApiError
    assert "leak_blocked" in got["error"] and secret not in got["error"]


def test_voyage_sync_client_reports_jitgates_message_not_an_invalid_response(stack: DevStack, secret: str) -> None:
    refusal = _gateway_refusal(stack, "voyage-test", "https://api.voyageai.com/v1/rerank", secret, "VOYAGE_API_KEY")
    body = refusal["body"]
    assert body["code"] == "leak_blocked" and body["detail"] == body["message"]
    got = _py(stack, "voyage-test", "voyage_sync", secret)
    assert got["error"].startswith("APIError: " + body["message"])
    assert "Invalid response object" not in got["error"] and secret not in got["error"]


def test_voyage_async_client_needs_voyageai_proxy(stack: DevStack, secret: str) -> None:
    unchanged = _py(stack, "voyage-test", "voyage_async", secret)
    assert unchanged["error"].startswith("APIConnectionError"), unchanged  # a plain aiohttp session: no proxy
    fixed = _py(stack, "voyage-test", "voyage_async", secret, JOB_FIX="1")
    assert "leak_blocked" in fixed["error"] and "Invalid response object" not in fixed["error"], fixed


def test_curl_over_http2_gets_json_in_jinas_shape(stack: DevStack, secret: str) -> None:
    body = json.dumps({"model": "m", "query": "whale", "documents": ["the blue whale", "deploy " + secret]})
    proc = _run(stack, "jina-test", [
        "sh", "-c", 'curl --http2 -s -w "\\nRESULT {\\"http\\": \\"%{http_version}\\"}" -H "content-type: '
        'application/json" -H "Authorization: Bearer $JINA_API_KEY" -d "$JOB_BODY" https://api.jina.ai/v1/rerank',
    ], env={"JOB_BODY": body})
    assert proc.returncode == 0, proc.stderr
    assert _result(proc) == {"http": "2"}
    answer = json.loads(proc.stdout.split("\nRESULT", 1)[0])
    assert answer["code"] == "leak_blocked" and answer["detail"] == answer["message"] and secret not in proc.stdout


NO_TOKEN = """
# The proxy without credentials and no token as the key: the gateway answers 407 token_required.
import re
gateway = re.sub(r"//[^@]*@", "//", os.environ["HTTPS_PROXY"])
for name in ("HTTPS_PROXY", "https_proxy"):
    os.environ[name] = gateway
errors = {}
import cohere, voyageai
try:
    cohere.ClientV2(api_key="not-a-token").rerank(model="m", query="whale", documents=DOCS)
except Exception as exc:
    errors["cohere"] = f"{type(exc).__name__}: {exc}"
try:
    voyageai.Client(api_key="not-a-token", max_retries=0).rerank("whale", DOCS, model="rerank-2")
except Exception as exc:
    errors["voyage"] = f"{type(exc).__name__}: {exc}"
out(**errors)
"""


def test_token_required_reaches_each_sdk_with_jitgates_message(stack: DevStack, secret: str) -> None:
    """The 407 a job without its token meets: cohere's ApiError and voyageai's APIError carry the message."""
    got = _result(_run(stack, "voyage-test", [sys.executable, "-c", _PY_HEAD + NO_TOKEN], env={"JOB_SECRET": secret}))
    message = "a JIT token is required"
    assert got["cohere"].startswith("ApiError: ") and "status_code: 407" in got["cohere"], got
    assert message in got["cohere"] and "token_required" in got["cohere"]
    assert got["voyage"].startswith("APIError: " + message), got
    assert "Invalid response object" not in got["voyage"]


# -- item 2's client table, checked by what the jobs observe -----------------------------------------


def _readme_table() -> dict[str, tuple[str, str]]:
    text = (REPO / "README.md").read_text()
    section = text.split("### Clients under `jitgate run`", 1)[1].split("\n#", 1)[0]
    rows: dict[str, tuple[str, str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in {"client", "---"} and not set(cells[0]) <= {"-"}:
            rows[cells[0]] = (cells[1], cells[2])
    return rows


def _observe(stack: DevStack, secret: str, row: str) -> tuple[bool, bool | None]:
    """(works unchanged, works with what the row says to set; None when nothing is to be set)."""
    if row.startswith("`cohere`"):
        return _py(stack, "cohere-test", "cohere", secret)["ok"] == 0, None
    if row.startswith("llama-index"):
        return _py(stack, "cohere-test", "llamaindex", secret)["ok"] == 0, None
    if row.startswith("`voyageai.Client`"):
        return "leak_blocked" in _py(stack, "voyage-test", "voyage_sync", secret)["error"], None
    if row.startswith("`voyageai.AsyncClient`"):
        unchanged = "leak_blocked" in _py(stack, "voyage-test", "voyage_async", secret)["error"]
        fixed = "leak_blocked" in _py(stack, "voyage-test", "voyage_async", secret, JOB_FIX="1")["error"]
        return unchanged, fixed
    if row.startswith("`aiohttp.ClientSession(trust_env=True)`"):
        return _py(stack, "cohere-test", "aiohttp", secret, JOB_TRUST_ENV="1")["ok"] == 0, None
    if row.startswith("`aiohttp.ClientSession()`"):
        unchanged = _py(stack, "cohere-test", "aiohttp", secret)["ok"] == 0
        return unchanged, _py(stack, "cohere-test", "aiohttp", secret, JOB_TRUST_ENV="1")["ok"] == 0
    if row.startswith("`curl"):
        proc = _run(stack, "cohere-test", ["sh", "-c", 'curl --http2 -s -o /dev/null -w "RESULT {\\"status\\": '
                                           '%{http_code}}" -H "Authorization: Bearer $CO_API_KEY" -d '
                                           '\'{"model":"m","query":"whale","documents":["the blue whale"]}\' '
                                           "https://api.cohere.com/v2/rerank"])
        return _result(proc) == {"status": 200}, None
    if row.startswith("Node"):
        if shutil.which("node") is None:
            pytest.skip("node is not installed")
        fetch = _result(_run(stack, "cohere-test", ["node", "-e", NODE_FETCH]))
        tunnel = _result(_run(stack, "cohere-test", ["node", "-e", NODE_CONNECT]))
        return fetch["ok"] == 0, tunnel["ok"] == 0
    raise AssertionError(f"the README names a client this test does not try: {row}")


def test_the_readme_client_table_says_what_the_clients_do(stack: DevStack, secret: str) -> None:
    table = _readme_table()
    assert len(table) >= 8, table
    node_major = None
    if shutil.which("node"):
        node_major = int(subprocess.run(["node", "--version"], capture_output=True, text=True).stdout[1:].split(".")[0])
    for row, (claim, what) in table.items():
        if row.startswith("Node") and node_major is not None and node_major >= 24:
            continue  # the row describes Node 20 to 23; Node 24 reads the proxy variables jitgate run sets
        unchanged, fixed = _observe(stack, secret, row)
        assert claim in {"yes", "no"}, row
        assert unchanged is (claim == "yes"), f"{row}: the README says {claim!r}, the job observed {unchanged}"
        if claim == "yes":
            assert what == "nothing", row
        else:
            assert fixed is True, f"{row}: what the README says to set ({what}) did not make it work"


# -- items 4, 5, 7: the CLI before and around the job ------------------------------------------------


def _issued(stack: DevStack) -> int:
    s3 = boto3.client("s3", endpoint_url=stack.env["AWS_ENDPOINT_URL"], region_name=stack.env["AWS_REGION"],
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=stack.env["JITGATE_BUCKET"], Prefix="token-events/")
    count = 0
    for page in pages:
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=stack.env["JITGATE_BUCKET"], Key=obj["Key"])["Body"].read().decode()
            count += sum(json.loads(line)["event_type"] == "issued" for line in body.splitlines())
    return count


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


def _refused_before_minting(stack: DevStack, extra: list[str], code: str, *, connection: str = "cohere-test",
                            env: dict[str, str] | None = None) -> str:
    before = _issued(stack)
    marker = Path(stack.state_dir) / "job-ran"
    proc = _run(stack, connection, ["touch", str(marker)], extra=extra, env=env)
    assert proc.returncode == 2, proc.stderr
    assert not marker.exists() and _issued(stack) == before
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in line and line.startswith(f"jitgate: {code}: "), line
    return line


def test_connections_lists_the_callers_own(stack: DevStack) -> None:
    proc = subprocess.run([JITGATE, "connections", "--json"], env={**os.environ, **stack.env}, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    listed = {c["connection"]: c["operations"] for c in json.loads(proc.stdout)["connections"]}
    assert listed == {name: ["rerank"] for name in RERANK_CONNECTIONS}
    table = subprocess.run([JITGATE, "connections"], env={**os.environ, **stack.env}, capture_output=True, text=True,
                           timeout=60)
    assert table.stdout.split()[:4] == ["CONNECTION", "DIALECT", "OPERATIONS", "MAX"]
    assert all(name in table.stdout for name in RERANK_CONNECTIONS)


def test_an_unknown_name_suggests_only_the_callers_close_names(stack: DevStack) -> None:
    line = _refused_before_minting(stack, [], "unknown_connection", connection="cohere")
    assert "did you mean cohere-test?" in line
    policy = load_policy(stack.env["JITGATE_POLICY"])
    others = set(policy.connections) - set(RERANK_CONNECTIONS)
    line = _refused_before_minting(stack, [], "unknown_connection", connection="chroma")  # chroma-dev: not theirs
    assert not any(name in line for name in others), line
    line = _refused_before_minting(stack, [], "not_granted", connection="pg-dev")
    assert "connection 'pg-dev'" in line and "identity" not in line


def test_bad_ttl_is_one_line_with_a_code(stack: DevStack) -> None:
    line = _refused_before_minting(stack, ["--ttl", "5y"], "bad_request")
    assert "'5y'" in line


def test_expiry_is_iso_8601_utc(stack: DevStack) -> None:
    proc = _run(stack, "cohere-test", ["true"], extra=["--ttl", "5m"])
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"expires at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", proc.stderr.splitlines()[0]), proc.stderr


def test_gateway_down_is_said_plainly_and_nothing_is_minted(stack: DevStack) -> None:
    port = _closed_port()
    line = _refused_before_minting(stack, ["--gateway", f"127.0.0.1:{port}"], "gateway_unreachable")
    assert f"127.0.0.1:{port}" in line and "is it running?" in line
    # --no-check-gateway skips the check: the job runs (and meets the dead gateway itself).
    proc = _run(stack, "cohere-test", ["true"], extra=["--gateway", f"127.0.0.1:{port}", "--no-check-gateway"])
    assert proc.returncode == 0 and "revoked" in proc.stderr


def test_a_gateway_ca_the_job_would_not_trust_is_refused(stack: DevStack) -> None:
    wrong = Path(stack.state_dir) / "upstream-ca.pem"  # a CA, but not the gateway's
    line = _refused_before_minting(stack, ["--gateway-ca", str(wrong)], "gateway_untrusted")
    assert str(wrong) in line and "did not sign" in line


def test_a_gateway_of_another_broker_is_refused(stack: DevStack, tmp_path: Path) -> None:
    """A second broker (its own KMS key) in the same local AWS: the gateway verifies the first one's tokens."""
    other = seed(stack.env["AWS_ENDPOINT_URL"], policy=None, secrets={}, prefix="other")
    with local_broker(other, stack.env["JITGATE_POLICY"], cwd=REPO) as broker:
        line = _refused_before_minting(stack, ["--broker", broker.url], "gateway_untrusted")
    assert f"does not trust the broker at {broker.url}" in line and stack.env["JITGATE_BROKER_URL"] in line


def test_a_postgres_connection_checks_the_listener(stack: DevStack) -> None:
    reader = {"JITGATE_DEV_SUBJECT": READER_SUB}
    port = _closed_port()
    line = _refused_before_minting(stack, ["--pg-gateway", f"127.0.0.1:{port}"], "gateway_unreachable",
                                   connection="pg-dev", env=reader)
    assert "Postgres listener" in line
    proc = _run(stack, "pg-dev", ["true"], env=reader)
    assert proc.returncode == 0, proc.stderr
