from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from jitgate.oidc_source import SOURCES, NoOidcToken, find_oidc_token

JWT_A = "aaa.bbb.ccc"
JWT_B = "ddd.eee.fff"


@pytest.fixture
def actions_server() -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({"path": self.path, "auth": self.headers.get("Authorization", "")})
            body = json.dumps({"value": JWT_B}).encode()
            self.send_response(200 if self.headers.get("Authorization") == "bearer req-token" else 403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/token?api-version=2.0", seen
    server.shutdown()


def test_order_explicit_then_env_then_file(tmp_path: Path) -> None:
    f = tmp_path / "tok"
    f.write_text(JWT_B + "\n")
    with httpx.Client() as http:
        env = {"JITGATE_OIDC_TOKEN": JWT_B, "AWS_WEB_IDENTITY_TOKEN_FILE": str(f)}
        assert find_oidc_token(explicit=JWT_A, env=env, http=http).token == JWT_A
        got = find_oidc_token(explicit=None, env=env, http=http)
        assert (got.token, got.source) == (JWT_B, "JITGATE_OIDC_TOKEN")
        got = find_oidc_token(explicit=None, env={"AWS_WEB_IDENTITY_TOKEN_FILE": str(f)}, http=http)
        assert got.token == JWT_B and got.source.startswith("token file")


def test_github_actions(actions_server: tuple[str, list[dict[str, str]]]) -> None:
    url, seen = actions_server
    env = {"ACTIONS_ID_TOKEN_REQUEST_URL": url, "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "req-token"}
    with httpx.Client() as http:
        got = find_oidc_token(explicit=None, env=env, http=http, audience="jitgate")
        assert got.token == JWT_B
        assert "audience=jitgate" in seen[0]["path"]
        with pytest.raises(NoOidcToken, match="GitHub Actions"):
            find_oidc_token(explicit=None, env={**env, "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "wrong"}, http=http)


def test_missing_names_every_source_tried() -> None:
    with httpx.Client() as http, pytest.raises(NoOidcToken) as info:
        find_oidc_token(explicit=None, env={}, http=http)
    for source in SOURCES:
        assert source in info.value.message
    assert info.value.status == 401


@pytest.mark.parametrize("bad", ["", "   ", "not-a-jwt"])
def test_configured_but_bad_source_is_an_error(bad: str, tmp_path: Path) -> None:
    with httpx.Client() as http, pytest.raises(NoOidcToken):
        find_oidc_token(explicit=None, env={"JITGATE_OIDC_TOKEN": bad or " "}, http=http)
    with httpx.Client() as http, pytest.raises(NoOidcToken, match="cannot read"):
        find_oidc_token(explicit=None, env={"AWS_WEB_IDENTITY_TOKEN_FILE": str(tmp_path / "nope")}, http=http)
