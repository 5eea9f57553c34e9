"""Issue 25: mitmproxy's own answers (upstream down 502, body too large 413) in the host dialect's
error shape, through the real gateway under `jitgate run`, on HTTP/1.1 and HTTP/2.

The stack's Cohere and Voyage sample upstreams are stopped: every request that reaches them is the
gateway's 502. A body over mitmproxy's `body_size_limit` (twice `jitgate_max_inspect_bytes`) is
answered 413 from its Content-Length, before the upstream is asked. The vendors' own SDKs must
raise their own exception carrying jitgate's message and code; curl must see JSON with no OS error.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from addon.error_answers import ANSWERS
from addon.settings import DEFAULT_MAX_INSPECT
from jitgate.devstack.stack import DevStack
from tests.e2e.test_run_clients_e2e import _result, _run

TOO_LARGE = 2 * DEFAULT_MAX_INSPECT + 1024  # over the gateway's body_size_limit
DOWN_CODE, DOWN_MESSAGE = ANSWERS[502]
LARGE_CODE, LARGE_MESSAGE = ANSWERS[413]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with DevStack(tmp_path_factory.mktemp("shapes") / "state") as st:
        for dialect in ("cohere", "voyage"):
            st.upstreams[dialect].stop()  # nothing listens there any more: connects are refused
        yield st


_HEAD = """
import json, os
SIZE = int(os.environ["JOB_SIZE"])
DOCS = ["the blue whale"] if SIZE == 0 else ["x" * SIZE]
def out(**kw):
    print("RESULT " + json.dumps(kw), flush=True)
"""
VOYAGE = _HEAD + """
import voyageai
try:
    voyageai.Client(max_retries=0).rerank("whale", DOCS, model="rerank-2")
    out(error=None)
except Exception as exc:
    out(error=f"{type(exc).__name__}: {exc}", body=getattr(exc, "http_body", None))
"""
COHERE = _HEAD + """
import cohere
try:
    cohere.ClientV2().rerank(model="rerank-v3.5", query="whale", documents=DOCS)
    out(error=None)
except Exception as exc:
    out(error=f"{type(exc).__name__}: {exc}", status=getattr(exc, "status_code", None))
"""


def _job(stack: DevStack, connection: str, code: str, size: int) -> dict[str, Any]:
    proc = _run(stack, connection, [sys.executable, "-c", code], env={"JOB_SIZE": str(size)})
    assert proc.returncode == 0, proc.stderr
    return _result(proc)


def test_voyageai_keeps_jitgates_upstream_down_answer(stack: DevStack) -> None:
    """A 5xx: voyageai's exception says "overloaded" and keeps jitgate's body in `http_body`.

    (The 413 is not tried with voyageai: requests writes the whole body before it reads an answer,
    and mitmproxy stops reading after its 413, so the job waits; see docs/performance.md.)"""
    got = _job(stack, "voyage-test", VOYAGE, 0)
    assert got["error"].split(":")[0] in {"ServiceUnavailableError", "APIError", "ServerError"}, got
    assert json.loads(got["body"]) == {"code": DOWN_CODE, "message": DOWN_MESSAGE, "detail": DOWN_MESSAGE}, got


@pytest.mark.parametrize(("size", "status", "code", "message"), [(0, 502, DOWN_CODE, DOWN_MESSAGE),
                                                                 (TOO_LARGE, 413, LARGE_CODE, LARGE_MESSAGE)])
def test_cohere_api_error_carries_jitgates_answer(stack: DevStack, size: int, status: int, code: str,
                                                  message: str) -> None:
    got = _job(stack, "cohere-test", COHERE, size)
    assert got["status"] == status and got["error"].startswith("ApiError"), got
    assert message in got["error"] and code in got["error"], got
    assert "Errno" not in got["error"] and "127.0.0.1" not in got["error"], got


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("version", ["--http2", "--http1.1"])
@pytest.mark.parametrize(("size", "status", "code", "message"), [(0, 502, DOWN_CODE, DOWN_MESSAGE),
                                                                 (TOO_LARGE, 413, LARGE_CODE, LARGE_MESSAGE)])
def test_curl_gets_the_answer_in_voyages_shape(stack: DevStack, tmp_path: Any, version: str, size: int,
                                               status: int, code: str, message: str) -> None:
    data = tmp_path / "body.json"
    docs = ["x" * size] if size else ["the blue whale"]
    data.write_text(json.dumps({"model": "rerank-2", "query": "whale", "documents": docs}))
    proc = _run(stack, "voyage-test", [
        "sh", "-c", f'curl {version} -s -H "content-type: application/json" -H "Authorization: Bearer '
        f'$VOYAGE_API_KEY" --data-binary @{data} -w "\\nRESULT {{\\"http\\": \\"%{{http_version}}\\", '
        f'\\"status\\": %{{http_code}}}}" https://api.voyageai.com/v1/rerank',
    ])
    assert proc.returncode == 0, proc.stderr
    assert _result(proc) == {"http": "2" if version == "--http2" else "1.1", "status": status}, proc.stdout
    answer = proc.stdout.split("\nRESULT", 1)[0]
    assert json.loads(answer) == {"code": code, "message": message, "detail": message}
    assert "<html" not in answer and "Errno" not in answer
