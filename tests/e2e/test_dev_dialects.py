"""`jitgate dev` as a user starts it, and each rerank dialect's own client through it.

The stack runs as the `jitgate dev` command (a child process), once on pinned ports and once
with a user's own `--policy` file. Each job runs under `jitgate run --connection NAME`, unchanged:
the Cohere SDK, the Voyage SDK, and requests for Jina and TEI (which have no SDK of their own).
The query has one right answer among the documents (index 1), whatever scores the upstream uses.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jitgate.devstack.policy import READER_SUB

JITGATE = str(Path(sys.executable).with_name("jitgate"))
REPO = Path(__file__).resolve().parents[2]
DOCS = [
    "Carson City is the capital city of the American state of Nevada.",
    "Washington, D.C. is the capital of the United States.",
    "Capital punishment has existed in the United States since before it was a country.",
    "The Northern Mariana Islands are a group of islands in the Pacific Ocean.",
]
QUERY = "What is the capital of the United States?"
# Each job prints `RANKED [indices, scores]` (top 3) from its own client's answer.
_COMMON = f"import json, os\nDOCS = {DOCS!r}\nQUERY = {QUERY!r}\n"
JOBS = {
    "cohere-test": _COMMON + (
        "import cohere\n"
        "r = cohere.ClientV2().rerank(model='rerank-v3.5', query=QUERY, documents=DOCS, top_n=3)\n"
        "print('RANKED', json.dumps([[x.index for x in r.results], [x.relevance_score for x in r.results]]))\n"
    ),
    "voyage-test": _COMMON + (
        "import voyageai\n"
        "r = voyageai.Client().rerank(QUERY, DOCS, model='rerank-2', top_k=3)\n"
        "assert [x.document for x in r.results] == [DOCS[x.index] for x in r.results]\n"
        "print('RANKED', json.dumps([[x.index for x in r.results], [x.relevance_score for x in r.results]]))\n"
    ),
    "jina-test": _COMMON + (
        "import requests\n"
        "r = requests.post('https://api.jina.ai/v1/rerank', timeout=30,"
        " headers={'Authorization': 'Bearer ' + os.environ['JINA_API_KEY']},"
        " json={'model': 'jina-reranker-v2-base-multilingual', 'query': QUERY, 'documents': DOCS, 'top_n': 3})\n"
        "r.raise_for_status()\n"
        "res = r.json()['results']\n"
        "assert [x['document']['text'] for x in res] == [DOCS[x['index']] for x in res]\n"
        "print('RANKED', json.dumps([[x['index'] for x in res], [x['relevance_score'] for x in res]]))\n"
    ),
    # TEI: self-hosted, no key variable; the token rides in the proxy credentials (HTTPS_PROXY).
    "tei-test": _COMMON + (
        "import requests\n"
        "r = requests.post(os.environ['JITGATE_TEI_URL'] + '/rerank', json={'query': QUERY, 'texts': DOCS},"
        " timeout=30)\n"
        "r.raise_for_status()\n"
        "res = r.json()[:3]\n"
        "assert sorted(x['index'] for x in r.json()) == list(range(len(DOCS)))\n"
        "print('RANKED', json.dumps([[x['index'] for x in res], [x['score'] for x in res]]))\n"
    ),
}


def _free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that were free a moment ago (the OS picked them)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


class DevCommand:
    """`jitgate dev ARGS` as a child; `env` is what it wrote to stack.json once ready."""

    def __init__(self, state: Path, *args: str) -> None:
        self.state = state
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [JITGATE, "dev", "--state-dir", str(state), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, cwd=REPO,
        )
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if "ready." in line:
                self._ready.set()

    def wait_ready(self, timeout: float = 180) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("jitgate dev did not become ready:\n" + "".join(self.lines))
        env: dict[str, str] = json.loads((self.state / "stack.json").read_text())
        return env

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=90)


@pytest.fixture(scope="module")
def pinned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], dict[str, int]]]:
    """The dev stack with its four ports pinned (ports the OS had free just before)."""
    ports = dict(zip(("gateway", "pg", "broker", "metrics"), _free_ports(4), strict=True))
    args = [f"--{name}-port={port}" for name, port in ports.items()]
    dev = DevCommand(tmp_path_factory.mktemp("dev-pinned") / "state", *args)
    try:
        yield dev.wait_ready(), ports
    finally:
        assert dev.stop() == 0, "".join(dev.lines)


def _run(env: dict[str, str], connection: str, code: str, **over: str) -> subprocess.CompletedProcess[str]:
    job_env = {**os.environ, **env, **over}
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        job_env.pop(name, None)
    argv = [JITGATE, "run", "--connection", connection, "--", sys.executable, "-c", code]
    return subprocess.run(argv, env=job_env, capture_output=True, text=True, timeout=120, check=False)


def _ranked(proc: subprocess.CompletedProcess[str]) -> tuple[list[int], list[float]]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RANKED "))
    indices, scores = json.loads(line.removeprefix("RANKED "))
    return indices, scores


def test_the_pinned_ports_are_the_ones_in_use(pinned: tuple[dict[str, str], dict[str, int]]) -> None:
    env, ports = pinned
    assert env["JITGATE_GATEWAY"] == f"127.0.0.1:{ports['gateway']}"
    assert env["JITGATE_PG_GATEWAY"] == f"127.0.0.1:{ports['pg']}"
    assert env["JITGATE_BROKER_URL"] == f"http://127.0.0.1:{ports['broker']}"
    assert env["JITGATE_METRICS_URL"] == f"http://127.0.0.1:{ports['metrics']}/metrics"
    with httpx.Client(trust_env=False, timeout=10) as c:
        assert c.get(f"http://127.0.0.1:{ports['metrics']}/healthz").status_code == 200
        assert c.get(f"http://127.0.0.1:{ports['broker']}/.well-known/jwks.json").json()["keys"]
    with socket.create_connection(("127.0.0.1", ports["pg"]), timeout=10):
        pass  # the Postgres listener accepts on its pinned port


@pytest.mark.parametrize("connection", list(JOBS))
def test_each_dialects_own_client_gets_the_right_answer_through_jitgate_dev(
    pinned: tuple[dict[str, str], dict[str, int]], connection: str
) -> None:
    env, _ = pinned
    indices, scores = _ranked(_run(env, connection, JOBS[connection]))
    assert indices[0] == 1, (indices, scores)  # "Washington, D.C. is the capital of the United States."
    assert len(indices) == 3 and len(set(indices)) == 3
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]


def test_every_connection_of_the_dev_policy_is_served(pinned: tuple[dict[str, str], dict[str, int]]) -> None:
    """No connection of the dev policy points at a host that does not exist."""
    import yaml

    env, _ = pinned
    doc = yaml.safe_load(Path(env["JITGATE_POLICY"]).read_text())
    for name, conn in doc["connections"].items():
        url = httpx.URL(conn["upstream"])
        assert url.host == "127.0.0.1", (name, conn["upstream"])
        with socket.create_connection((url.host, url.port), timeout=10):
            pass  # something listens there: a sample upstream, Chroma or Postgres


USER_POLICY = """\
# A user's own policy over the dev stack.
version: 1
issuers:
  - issuer: dev
    audience: jitgate
connections:
  my-tei:
    dialect: tei
    upstream: dev:tei
    credential: {secret_id: mine/tei, format: "Bearer {secret}"}
  my-store:
    dialect: chroma
    upstream: dev:chroma
    key_env: CHROMA_API_KEY
    credential: {secret_id: mine/chroma, header: X-Chroma-Token, format: "{secret}"}
grants:
  - name: my-rerank
    match: {issuer: dev, claims: {repository: ["acme/*"]}}
    connections: [my-tei]
    operations: [rerank]
    max_ttl: 10m
  - name: my-readers
    match: {issuer: dev, claims: {sub: ["READER"]}}
    connections: [my-store]
    operations: [query, get, count]
    collections: [candidates]
    fields: [ids, distances]
    max_ttl: 10m
""".replace("READER", READER_SUB)


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    work = tmp_path_factory.mktemp("dev-own")
    policy = work / "mine.yaml"
    policy.write_text(USER_POLICY)
    dev = DevCommand(work / "state", "--policy", str(policy))
    try:
        yield dev.wait_ready()
    finally:
        assert dev.stop() == 0, "".join(dev.lines)


def test_a_users_own_policy_runs_over_the_same_stack(own: dict[str, str]) -> None:
    indices, _ = _ranked(_run(own, "my-tei", JOBS["tei-test"]))
    assert indices[0] == 1
    store = (
        "import os, chromadb\n"
        "from chromadb.config import Settings\n"
        "client = chromadb.HttpClient(host=os.environ['CHROMA_HOST'], port=int(os.environ['CHROMA_PORT']),"
        " ssl=False, headers={'x-chroma-token': os.environ['CHROMA_API_KEY']},"
        " settings=Settings(anonymized_telemetry=False))\n"
        "col = client.get_collection('candidates')\n"
        "got = col.get(ids=['c1'], include=['documents'])\n"
        "print('IDS', got['ids'], 'DOCS', got['documents'], 'COUNT', col.count())\n"
    )
    proc = _run(own, "my-store", store, JITGATE_DEV_SUBJECT=READER_SUB)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "IDS ['c1'] DOCS None COUNT 8" in proc.stdout  # its grant's fields: no documents


def test_a_users_own_policy_is_all_there_is(own: dict[str, str]) -> None:
    """Only the parts it names run; the dev policy's connections are not there."""
    assert "JITGATE_PG_GATEWAY" not in own and own["JITGATE_CONNECTION"] == "my-tei"
    proc = _run(own, "cohere-test", "print('RAN')")
    assert proc.returncode != 0 and "RAN" not in proc.stdout
    assert "unknown_connection" in proc.stderr or "not_granted" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (USER_POLICY.replace("upstream: dev:tei", "upstream: dev:triton"), "'dev:triton' is no part of the dev stack"),
        (USER_POLICY.replace("operations: [rerank]", "operations: [rerank]\n    colour: blue"), "line 21"),
    ],
    ids=["unknown-part", "unknown-field"],
)
def test_a_bad_own_policy_stops_the_start_naming_why(tmp_path: Path, text: str, said: str) -> None:
    policy = tmp_path / "mine.yaml"
    policy.write_text(text)
    proc = subprocess.run(
        [JITGATE, "dev", "--state-dir", str(tmp_path / "state"), "--policy", str(policy)],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
        env={**os.environ, "COLUMNS": "1000"},  # rich wraps at 80 columns otherwise
    )
    assert proc.returncode == 1
    assert said in proc.stderr and str(policy) in proc.stderr, proc.stderr


def test_a_pinned_port_that_is_taken_stops_the_start(tmp_path: Path) -> None:
    policy = tmp_path / "mine.yaml"
    policy.write_text(USER_POLICY)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [JITGATE, "dev", "--state-dir", str(tmp_path / "state"), "--policy", str(policy), "--gateway-port",
             str(port)],
            capture_output=True, text=True, timeout=300, cwd=REPO, check=False, env={**os.environ, "COLUMNS": "1000"},
        )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "the stack did not start" in proc.stderr and "stopping the dev stack" in proc.stderr
