"""`jitgate run`, `jitgate dev` and `make demo` end to end, against the real local stack."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from jitgate.devstack.policy import READER_SUB
from jitgate.devstack.stack import DevStack
from jitgate.state import REVOCATION_PK

JITGATE = str(Path(sys.executable).with_name("jitgate"))
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with DevStack(tmp_path_factory.mktemp("dev") / "state") as st:
        yield st


def _env(stack: DevStack) -> dict[str, str]:
    return {**os.environ, **stack.env}


def _revoked(stack: DevStack, jti: str) -> bool:
    ddb = boto3.client(
        "dynamodb",
        endpoint_url=stack.env["AWS_ENDPOINT_URL"],
        region_name=stack.env["AWS_REGION"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    item = ddb.get_item(TableName=stack.env["JITGATE_TABLE"], Key={"pk": {"S": REVOCATION_PK}, "sk": {"S": jti}})
    return "Item" in item


def _job(code: str) -> list[str]:
    return [JITGATE, "run", "--connection", "cohere-test", "--", sys.executable, "-c", code]


PRINT_JTI = "import os; print('JTI', os.environ['JITGATE_JTI'], flush=True); "


@pytest.mark.parametrize("status", [0, 7])
def test_run_propagates_status_and_revokes(stack: DevStack, status: int) -> None:
    proc = subprocess.run(
        _job(PRINT_JTI + f"raise SystemExit({status})"), env=_env(stack), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == status, proc.stderr
    jti = proc.stdout.split("JTI ", 1)[1].split()[0]
    assert _revoked(stack, jti)
    assert "revoked" in proc.stderr


def test_job_environment_reaches_the_upstream_through_the_gateway(stack: DevStack) -> None:
    code = (
        "import os, httpx\n"
        "assert os.environ['CO_API_KEY'].count('.') == 2\n"
        "r = httpx.post('https://api.cohere.com/v2/rerank', json={'model': 'm', 'query': 'whale',"
        " 'documents': ['blue whale', 'cat']}, headers={'Authorization': 'Bearer ' + os.environ['CO_API_KEY']})\n"
        "print('STATUS', r.status_code, r.json()['results'][0]['index'])\n"
    )
    proc = subprocess.run(_job(code), env=_env(stack), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "STATUS 200 0" in proc.stdout


def test_run_exports_the_chroma_variables_and_the_real_client_works_unchanged(stack: DevStack) -> None:
    """The issue's own snippet, as a reader of chroma-dev under `jitgate run` (the real Chroma server)."""
    code = (
        "import os, chromadb\n"
        "from chromadb.config import Settings\n"
        "client = chromadb.HttpClient(host=os.environ['CHROMA_HOST'], port=int(os.environ['CHROMA_PORT']),"
        " ssl=os.environ['CHROMA_SSL'] == 'true', headers={'x-chroma-token': os.environ['CHROMA_API_KEY']},"
        " settings=Settings(anonymized_telemetry=False))\n"
        "col = client.get_collection('candidates')\n"
        "got = col.query(query_embeddings=[[0.5] * 8], n_results=2, include=['documents', 'distances'])\n"
        "print('COUNT', col.count(), 'HITS', len(got['ids'][0]))\n"
    )
    env = {**_env(stack), "JITGATE_DEV_SUBJECT": READER_SUB}
    argv = [JITGATE, "run", "--connection", "chroma-dev", "--", sys.executable, "-c", code]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HITS 2" in proc.stdout and "COUNT 8" in proc.stdout


def test_run_revokes_after_sigint(stack: DevStack) -> None:
    proc = subprocess.Popen(
        _job(PRINT_JTI + "import time; time.sleep(60)"),
        env=_env(stack),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    jti = line.split("JTI ", 1)[1].split()[0]
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert _revoked(stack, jti)


def test_missing_oidc_source_is_a_clear_error(stack: DevStack) -> None:
    env = {k: v for k, v in _env(stack).items() if k != "JITGATE_DEV_ISSUER"}
    proc = subprocess.run(_job("print('never')"), env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "never" not in proc.stdout
    assert "oidc_token_missing" in proc.stderr and "GitHub Actions" in proc.stderr


def test_capture_refused_with_reason(stack: DevStack) -> None:
    from jitgate.capture import capture_unavailable_reason

    reason = capture_unavailable_reason()
    if reason is None:
        pytest.skip("this kernel allows local capture; the refusal sentence cannot be shown here")
    proc = subprocess.run(
        [JITGATE, "run", "--capture", "--connection", "cohere-test", "--", "true"],
        env=_env(stack), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "Transparent capture needs" in proc.stderr and "HTTPS_PROXY" in proc.stderr


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = {int(x) for x in (task / "children").read_text().split()}
            except OSError:
                continue
            todo.extend(kids - found)
            found |= kids
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_dev_starts_and_stops_cleanly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [JITGATE, "dev", "--state-dir", str(tmp_path / "dev")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stderr is not None
    lines = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if "ready." in line:
            break
    assert any("ready." in x for x in lines), "".join(lines)
    env_file = tmp_path / "dev" / "env.sh"
    assert "JITGATE_GATEWAY=" in env_file.read_text()
    children = _children(proc.pid)
    assert len(children) >= 3  # moto server, broker, mitmdump
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    time.sleep(0.5)
    alive = [c for c in children if _alive(c)]
    assert not alive, [Path(f"/proc/{c}/cmdline").read_text().replace("\0", " ") for c in alive]


def test_gateway_command_runs_the_chain(stack: DevStack, tmp_path: Path) -> None:
    """`jitgate gateway` is mitmdump with the chain: a token reranks, a foreign host is refused."""
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _env(stack)
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        env.pop(name, None)
    argv = [
        JITGATE, "gateway", "--listen-port", str(port), "--metrics-port", "0",
        "--jwks-url", stack.env["JITGATE_BROKER_URL"] + "/.well-known/jwks.json",
        "--issuer", stack.env["JITGATE_BROKER_URL"],
        "--upstream-ca", str(Path(stack.env["JITGATE_STATE_DIR"]) / "upstream-ca.pem"),
        "--spool-dir", str(tmp_path / "spool"),
        "--set", f"confdir={tmp_path / 'ca'}",
    ]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while (tmp_path / "ca" / "mitmproxy-ca-cert.pem").exists() is False or not _listening(port):
            assert proc.poll() is None and time.monotonic() < deadline, "jitgate gateway did not start"
            time.sleep(0.2)
        token = subprocess.run(
            [JITGATE, "token"], env=env, capture_output=True, text=True, timeout=60, check=True
        ).stdout.strip()
        bundle = tmp_path / "bundle.pem"
        bundle.write_bytes(
            Path(stack.env["JITGATE_CA_BUNDLE"]).read_bytes() + (tmp_path / "ca" / "mitmproxy-ca-cert.pem").read_bytes()
        )
        proxy = f"http://jit:{token}@127.0.0.1:{port}"
        with httpx.Client(proxy=proxy, verify=str(bundle), timeout=20) as client:
            ok = client.post(
                "https://api.cohere.com/v2/rerank", json={"model": "m", "query": "whale", "documents": ["whale", "x"]}
            )
            assert ok.status_code == 200, ok.text
            assert ok.json()["results"][0]["index"] == 0
            try:
                refused = client.get("https://example.org/")
                status = refused.status_code
            except httpx.ProxyError as exc:
                status = 403 if "403" in str(exc) else 0
            assert status == 403
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_dev_stack_writes_the_metrics_url_to_env_sh(stack: DevStack) -> None:
    url = stack.env["JITGATE_METRICS_URL"]
    assert f"export JITGATE_METRICS_URL={url}\n" in (stack.state_dir / "env.sh").read_text()
    resp = httpx.get(url, timeout=10)
    assert resp.status_code == 200 and "jitgate_ready" in resp.text
    assert httpx.get(url.removesuffix("/metrics") + "/healthz", timeout=10).status_code == 200
