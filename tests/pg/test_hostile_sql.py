"""Hostile SQL through the real gateway: each refused, and nothing of it reaches the server.

Every statement carries a marker of its own; the server logs every statement it receives
(`log_statement = all`), so a marker absent from the server's log is a statement the gateway kept.
"""

from __future__ import annotations

import socket
import ssl
import struct
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jitgate.devstack.gateway import Gateway
from jitgate.devstack.postgres import Postgres
from tests.pg.conftest import READER

HOSTILE = [
    ("comment", "SELECT owner_email /* {m} */ FROM candidates", "column_not_allowed"),
    ("nested comment", "SELECT id /* a /* {m} */ */, owner_email FROM candidates", "column_not_allowed"),
    ("line comment", "SELECT id FROM audit_notes -- {m}", "table_not_allowed"),
    ("dollar quoting", "SELECT $q${m}$q$, owner_email FROM candidates", "column_not_allowed"),
    ("dollar quote hiding a statement", "SELECT $q$'; SELECT note FROM audit_notes; --{m}$q$, note FROM audit_notes",
     "table_not_allowed"),
    ("unicode identifier", "SELECT U&\"owner\\005femail\", '{m}' FROM candidates", "column_not_allowed"),
    ("quoted identifier of other case", "SELECT id, '{m}' FROM \"CANDIDATES\"", "table_not_allowed"),
    ("quoted column of other case", "SELECT \"ID\", '{m}' FROM candidates", "column_not_allowed"),
    ("statement stacking", "SELECT id FROM candidates WHERE body <> '{m}'; SELECT note FROM audit_notes",
     "table_not_allowed"),
    ("CTE named like a granted table", "WITH candidates AS (SELECT id, note AS body FROM audit_notes) "
     "SELECT id, body, '{m}' FROM candidates", "table_not_allowed"),
    ("catalog secrets", "SELECT rolpassword, '{m}' FROM pg_catalog.pg_authid", "table_not_allowed"),
    ("shadow view", "SELECT passwd, '{m}' FROM pg_shadow", "table_not_allowed"),
    ("another schema", "SELECT id, '{m}' FROM information_schema.tables", "table_not_allowed"),
    ("function in an expression", "SELECT id FROM candidates WHERE length(pg_read_file('/etc/passwd')) > 0 "
     "AND body <> '{m}'", "function_not_allowed"),
    ("sleep", "SELECT pg_catalog.pg_sleep(0), '{m}'", "function_not_allowed"),
    ("set_config", "SELECT set_config('search_path', 'pg_temp', false), '{m}'", "function_not_allowed"),
    ("large object", "SELECT lo_import('/etc/passwd'), '{m}'", "function_not_allowed"),
    ("copy to program", "COPY (SELECT '{m}') TO PROGRAM 'id'", "statement_not_allowed"),
    ("copy to stdout", "COPY candidates (id) TO STDOUT -- {m}", "statement_not_allowed"),
    ("do", "DO $$ BEGIN RAISE NOTICE '{m}'; END $$", "statement_not_allowed"),
    ("sql prepare", "PREPARE p AS SELECT '{m}'", "statement_not_allowed"),
    ("sql execute", "EXECUTE p -- {m}", "statement_not_allowed"),
    ("create function", "CREATE FUNCTION f() RETURNS text AS $$ SELECT '{m}' $$ LANGUAGE sql",
     "statement_not_allowed"),
    ("set role", "SET ROLE postgres -- {m}", "setting_not_allowed"),
    ("set session authorization", "SET SESSION AUTHORIZATION postgres -- {m}", "setting_not_allowed"),
    ("set search_path", "SET search_path = pg_temp -- {m}", "setting_not_allowed"),
    ("alter system", "ALTER SYSTEM SET log_statement = 'none' -- {m}", "statement_not_allowed"),
    ("parser rejects", "SELEC id FROM candidates -- {m}", "sql_not_parsed"),
    ("star on a column-limited table", "SELECT *, '{m}' FROM candidates", "column_not_allowed"),
    ("whole row", "SELECT c, '{m}' FROM candidates c", "column_not_allowed"),
    ("write with a read token", "UPDATE candidates SET body = '{m}' WHERE id = 1", "operation_not_allowed"),
]


def _psql(env: dict[str, str], sql: str | None = None, *, file: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1"]
    argv += ["-f", str(file)] if file is not None else ["-c", sql or ""]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def reader_env(pg_mint: Callable[..., dict[str, Any]], pg_env: Callable[..., dict[str, str]]) -> dict[str, str]:
    return pg_env(pg_mint(READER)["token"])


@pytest.mark.parametrize(("name", "template", "code"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_refused_and_never_sent(
    name: str, template: str, code: str, reader_env: dict[str, str], postgres: Postgres
) -> None:
    marker = f"m{uuid.uuid4().hex}"
    out = _psql(reader_env, template.format(m=marker))
    assert out.returncode != 0
    assert f"jitgate {code}" in out.stderr, out.stderr
    assert "42501" in out.stderr or "ERROR" in out.stderr
    ok = _psql(reader_env, f"SELECT count(*) FROM candidates WHERE body <> '{marker}-after'")
    assert ok.returncode == 0, ok.stderr  # the gateway still serves this token
    log = postgres.log_text()
    assert f"{marker}-after" in log  # the log shows what reached the server
    assert marker + "'" not in log and f"{marker} " not in log and not log.count(marker) > log.count(f"{marker}-after")


def test_ten_megabyte_statement(reader_env: dict[str, str], postgres: Postgres, tmp_path: Path) -> None:
    marker = f"m{uuid.uuid4().hex}"
    big = tmp_path / "big.sql"
    big.write_text(f"SELECT id FROM candidates WHERE body = '{marker}{'x' * (10 * 1024 * 1024)}';\n")
    out = _psql(reader_env, file=big)
    assert out.returncode != 0 and "jitgate statement_not_allowed" in out.stderr, out.stderr[-500:]
    assert marker not in postgres.log_text()


def test_startup_without_tls_refused(
    pg_env: Callable[..., dict[str, str]], pg_mint: Callable[..., dict[str, Any]]
) -> None:
    out = _psql(pg_env(pg_mint(READER)["token"], PGSSLMODE="disable"), "SELECT 1")
    assert out.returncode != 0 and "jitgate tls_required" in out.stderr, out.stderr


def test_password_that_is_no_token(pg_env: Callable[..., dict[str, str]], postgres: Postgres) -> None:
    out = _psql(pg_env("not-a-token-" + uuid.uuid4().hex), "SELECT 1")
    assert out.returncode != 0 and "jitgate invalid_token" in out.stderr, out.stderr


def test_the_real_password_is_no_token(pg_env: Callable[..., dict[str, str]], postgres: Postgres) -> None:
    out = _psql(pg_env(postgres.password, PGUSER="ranker"), "SELECT 1")
    assert out.returncode != 0 and "jitgate invalid_token" in out.stderr, out.stderr


def test_token_of_another_connection(
    pg_mint: Callable[..., dict[str, Any]], pg_env: Callable[..., dict[str, str]]
) -> None:
    token = pg_mint("repo:acme/search-ranker:ref:refs/heads/main", connection="cohere-test")["token"]
    out = _psql(pg_env(token), "SELECT 1")
    assert out.returncode != 0 and "jitgate wrong_connection" in out.stderr, out.stderr


def _raw_session(port: int, bundle: Path, token: str) -> ssl.SSLSocket:
    """A hand-made client up to ReadyForQuery: TLS, startup, the token as password."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(struct.pack("!II", 8, 80877103))
    assert sock.recv(1) == b"S"
    tls = ssl.create_default_context(cafile=str(bundle)).wrap_socket(sock, server_hostname="127.0.0.1")
    params = b"user\0r\0database\0ranking\0\0"
    tls.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
    _read_until(tls, b"R")
    tls.sendall(b"p" + struct.pack("!I", 4 + len(token) + 1) + token.encode() + b"\0")
    _read_until(tls, b"Z")
    return tls


def _read_until(sock: ssl.SSLSocket, kind: bytes) -> bytes:
    while True:
        head = b""
        while len(head) < 5:
            chunk = sock.recv(5 - len(head))
            assert chunk, "connection closed"
            head += chunk
        body = b""
        (length,) = struct.unpack("!I", head[1:])
        while len(body) < length - 4:
            body += sock.recv(length - 4 - len(body))
        if head[:1] == kind:
            return body


def test_query_with_bytes_after_its_text(
    pg_gateway: Gateway, pg_mint: Callable[..., dict[str, Any]], pg_bundle: Path, postgres: Postgres
) -> None:
    assert pg_gateway.pg_port is not None
    marker = f"m{uuid.uuid4().hex}"
    with _raw_session(pg_gateway.pg_port, pg_bundle, pg_mint(READER)["token"]) as tls:
        # The check reads the text up to its NUL; what follows must not ride along to the server.
        body = b"SELECT 1\0SELECT note, '" + marker.encode() + b"' FROM audit_notes\0"
        tls.sendall(b"Q" + struct.pack("!I", 4 + len(body)) + body)
        error = _read_until(tls, b"E")
    assert b"pg_protocol_violation" in error
    assert marker not in postgres.log_text()


def test_replication_startup_refused(reader_env: dict[str, str]) -> None:
    env = {**reader_env}
    argv = ["psql", "-X", "-At", "-d", "dbname=ranking replication=database", "-c", "IDENTIFY_SYSTEM"]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "jitgate replication_not_allowed" in out.stderr, out.stderr


def test_startup_options_refused(reader_env: dict[str, str]) -> None:
    out = _psql({**reader_env, "PGOPTIONS": "-c search_path=pg_temp"}, "SELECT 1")
    assert out.returncode != 0 and "startup options are not allowed" in out.stderr, out.stderr


def test_startup_that_never_completes_is_closed(pg_gateway: Gateway) -> None:
    assert pg_gateway.pg_port is not None
    with socket.create_connection(("127.0.0.1", pg_gateway.pg_port), timeout=60) as sock:
        sock.sendall(b"\x00\x00\x00\x08")  # half a startup, then silence
        assert sock.recv(1) == b""  # the gateway ends it (its startup deadline), never waits forever


def test_gssenc_answered_n_then_tls(pg_gateway: Gateway) -> None:
    assert pg_gateway.pg_port is not None
    with socket.create_connection(("127.0.0.1", pg_gateway.pg_port), timeout=30) as sock:
        sock.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x30")  # GSSENCRequest
        assert sock.recv(1) == b"N"
        sock.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")  # SSLRequest
        assert sock.recv(1) == b"S"
