"""Every error code is defined once, in jitgate/errors.py, in a tree that follows the HTTP status."""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import broker
import jitgate
from jitgate import errors
from jitgate.client import BrokerClient
from jitgate.errors import CODES, JitgateError

ROOT = Path(__file__).resolve().parents[2]
# addon/ answers its codes through the same classes; its sources are checked by the gateway's own test.
CHECKED = ("broker", "jitgate", "addon")


def _subclasses(cls: type[JitgateError]) -> Iterator[type[JitgateError]]:
    for child in cls.__subclasses__():
        yield child
        yield from _subclasses(child)


def _import_all() -> None:
    for package in (jitgate, broker):
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            importlib.import_module(info.name)


def test_the_class_tree_follows_the_http_status() -> None:
    for cls in _subclasses(JitgateError):
        parent = cls.__mro__[1]
        if parent is not JitgateError:
            assert cls.status == parent.status, f"{cls.__name__} answers {cls.status}, its parent {parent.status}"
        assert 200 <= cls.status <= 599 and cls.__doc__, cls.__name__


def test_every_error_class_is_in_errors_py_and_in_codes() -> None:
    _import_all()  # a class defined anywhere else would show up among the subclasses now
    for cls in _subclasses(JitgateError):
        assert cls.__module__ == "jitgate.errors", f"{cls.__module__}.{cls.__name__} defines an error outside errors.py"
        assert CODES[cls.code] in (cls, *cls.__mro__), cls.__name__
    assert CODES["internal_error"] is JitgateError


def _is_text(node: ast.expr | None) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str))


def _code_literals(path: Path) -> Iterator[int]:
    """Lines of `code = "..."` in a class, `code="..."` in a call, `{"code": "..."}`: codes made up there."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                targets = stmt.targets if isinstance(stmt, ast.Assign) else []
                if any(getattr(t, "id", None) == "code" for t in targets) and _is_text(getattr(stmt, "value", None)):
                    yield stmt.lineno
        elif isinstance(node, ast.keyword) and node.arg == "code" and _is_text(node.value):
            yield node.value.lineno
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "code" and _is_text(value):
                    yield key.lineno


def test_no_code_is_written_outside_errors_py() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for top in CHECKED
        for path in sorted((ROOT / top).rglob("*.py"))
        if path != ROOT / "jitgate" / "errors.py"
        for line in _code_literals(path)
    ]
    assert found == []


def test_the_literal_check_sees_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        'class E:\n    code = "x"\n\nf(code="y")\nf(code=f"z_{1}")\nd = {"code": "w"}\nok = {"code": e.code}\n',
        encoding="utf-8",
    )
    assert sorted(_code_literals(sample)) == [2, 4, 5, 6]


@pytest.mark.parametrize(
    ("cls", "parent"),
    [
        (errors.TokenRequired, JitgateError),  # 407, not 401
        (errors.PayloadTooLarge, JitgateError),  # 413, not 403
        (errors.RequestLimitExceeded, JitgateError),  # 429, not 403
        (errors.ApprovalExpired, JitgateError),  # 410, not 403
        (errors.NoOidcToken, errors.Unauthenticated),
        (errors.BrokerUnreachable, errors.Unavailable),
        (errors.AuditUnavailable, errors.Unavailable),
    ],
)
def test_parents(cls: type[JitgateError], parent: type[JitgateError]) -> None:
    assert cls.__mro__[1] is parent


# -- the client reads the broker's answers as these classes -----------------------------------------


class _Answers(BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, bytes]] = {}

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        status, body = self.answers[self.path]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def answering() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("status", "body", "cls", "code"),
    [
        (403, {"code": "not_granted", "message": "no"}, errors.NotGranted, "not_granted"),
        (410, {"code": "approval_expired", "message": "late"}, errors.ApprovalExpired, "approval_expired"),
        (401, {"code": "token_expired", "message": "old"}, errors.TokenExpired, "token_expired"),
        (418, {"code": "made_up_elsewhere", "message": "?"}, errors.BrokerError, "broker_error"),
        (502, "not json", errors.BrokerError, "broker_error"),
        (500, {"message": "no code"}, errors.BrokerError, "broker_error"),
    ],
)
def test_the_client_raises_the_class_of_the_code_the_broker_answered(
    answering: str, status: int, body: object, cls: type[JitgateError], code: str
) -> None:
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    _Answers.answers = {"/v1/approvals/x": (status, raw)}
    with pytest.raises(JitgateError) as info:
        BrokerClient(answering).approval("oidc", "x")
    assert type(info.value) is cls and (info.value.code, info.value.status) == (code, status)


def test_an_unreachable_broker_is_broker_unreachable() -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(errors.BrokerUnreachable) as info:
        BrokerClient(f"http://127.0.0.1:{port}").jwks()
    assert (info.value.code, info.value.status) == ("broker_unreachable", 503)
