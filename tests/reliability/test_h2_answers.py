"""The gateway's own error answers over HTTP/2 (client side) are jitgate's JSON, as over HTTP/1.1.

mitmproxy writes an HTML page with the raw error text (an OS error naming the host, the port, the
reason) when the upstream cannot be reached over HTTP/2; addon/mitmproxy_compat.py puts
`h2_server_handle_event` in front of it (issue 25, item 1). The client is the real curl with
`--http2`; its proxy credentials go in on stdin (`-K -`), never on the command line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from jitgate.devstack.gateway import Gateway
from tests.reliability.harness import FaultyUpstream
from tests.reliability.test_upstream import BODY, faulty  # noqa: F401  (the fixture)

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def curl(gw: Gateway, bundle: Path, token: str, url: str, *, version: str) -> tuple[str, int, str, bytes]:
    """(HTTP version, status, content type, body) of one POST through the gateway with real curl."""
    config = "\n".join(
        [
            f'proxy = "http://127.0.0.1:{gw.port}"',
            f'proxy-user = "jit:{token}"',
            f'cacert = "{bundle}"',
            f'url = "{url}"',
            'header = "Content-Type: application/json"',
            f"data = {json.dumps(json.dumps(BODY))}",
        ]
    )
    out = subprocess.run(
        ["curl", "-K", "-", version, "-s", "-o", "-", "-w", "\n%{http_version} %{http_code} %{content_type}"],
        input=config.encode(), capture_output=True, timeout=60, check=False,
    )
    body, _, tail = out.stdout.rpartition(b"\n")
    http_version, status, content_type = [*tail.decode().split(" ", 2), "", ""][:3]
    return http_version, int(status), content_type, body


def _assert_json_502(answer: tuple[str, int, str, bytes], token: str) -> None:
    _, status, content_type, body = answer
    assert (status, content_type) == (502, "application/json"), body
    doc = json.loads(body)
    assert set(doc) == {"code", "message"} and doc["code"] == "upstream_unavailable"
    text = body.decode()
    assert "<html" not in text and "Errno" not in text and "127.0.0.1" not in text and token not in text


@pytest.mark.parametrize("faulty", ["reset"], indirect=True)
@pytest.mark.parametrize("version", ["--http2", "--http1.1"])
def test_upstream_reset_is_json_on_both_http_versions(
    faulty: tuple[FaultyUpstream, Gateway, Path, str, str], version: str  # noqa: F811
) -> None:
    up, gw, bundle, token, _ = faulty
    answer = curl(gw, bundle, token, f"{up.url}/v2/rerank", version=version)
    assert answer[0] == ("2" if version == "--http2" else "1.1")  # the protocol the test means
    _assert_json_502(answer, token)


@pytest.mark.parametrize("faulty", ["reset"], indirect=True)
def test_refused_upstream_is_json_over_http2(faulty: tuple[FaultyUpstream, Gateway, Path, str, str]) -> None:  # noqa: F811
    up, gw, bundle, token, _ = faulty
    up.close()  # nothing listens on the upstream's port any more: the connect is refused
    answer = curl(gw, bundle, token, f"{up.url}/v2/rerank", version="--http2")
    assert answer[0] == "2"
    _assert_json_502(answer, token)
    assert gw.proc.poll() is None, "\n".join(gw.log)
