"""`jitgate run`: a JIT token that lives exactly as long as the job.

Get an OIDC token, mint a JIT token, run the command with the proxy, CA bundle and API-key
variables set, and revoke the token when the command ends: on success, failure or Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import certifi

from jitgate.client import Minted


@dataclass(frozen=True)
class JobEnv:
    """What the job's environment gains: proxy, CA bundle and the token as the API key."""

    gateway: str  # host:port, or https://host:port for TLS to the gateway (the token never in clear)
    ca_bundle: Path
    key_env: str | Sequence[str] | None  # one variable or several (issue 25: CO_API_KEY and COHERE_API_KEY)
    broker: str | None = None  # the broker's URL: the job reaches it directly (NO_PROXY)


# Loopback is never sent through the gateway (a job's own local services); the job's upstreams are.
LOOPBACK_NO_PROXY = ("localhost", "127.0.0.1", "::1")


def write_ca_bundle(gateway_ca: Path, directory: Path | None = None) -> Path:
    """Public roots plus the gateway CA, in one PEM file clients can trust."""
    fd, name = tempfile.mkstemp(prefix="jitgate-ca-", suffix=".pem", dir=directory)
    with os.fdopen(fd, "wb") as out:
        out.write(Path(certifi.where()).read_bytes())
        out.write(b"\n")
        out.write(gateway_ca.read_bytes())
    return Path(name)


def job_environment(base: Mapping[str, str], minted: Minted, job: JobEnv) -> dict[str, str]:
    env = dict(base)
    scheme, sep, address = job.gateway.rpartition("://")
    if sep and scheme not in ("http", "https"):
        raise ValueError("the gateway is host:port or https://host:port")
    proxy = f"{scheme or 'http'}://jit:{minted.token}@{address}"
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        env[name] = proxy
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        env[name] = str(job.ca_bundle)
    for name in (job.key_env,) if isinstance(job.key_env, str) else job.key_env or ():
        env[name] = minted.token
    env.update(store_variables(minted))
    env["JITGATE_JTI"] = minted.jti
    env.update(ecosystem_environment(job, upstream=minted.upstream))
    return env


# libpq variables a job's environment may carry that would send it elsewhere or change its session.
_PG_DROPPED = ("PGHOSTADDR", "PGSERVICE", "PGSERVICEFILE", "PGOPTIONS", "PGSSLCERT", "PGSSLKEY", "PGPASSFILE",
               "PGSSLCRL", "PGSSLCRLDIR", "PGREQUIRESSL", "PGGSSENCMODE", "PGTARGETSESSIONATTRS")


def pg_environment(
    base: Mapping[str, str], minted: Minted, *, gateway: str, ca_bundle: Path, user: str
) -> dict[str, str]:
    """What psql / psycopg / any libpq client needs to reach a postgres connection through the gateway:
    the listener, the connection's database, the token as the password, TLS verified against the bundle."""
    host, _, port = gateway.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError("the gateway's Postgres listener must be HOST:PORT")
    env = {k: v for k, v in base.items() if k not in _PG_DROPPED}
    env.update(
        {
            "PGHOST": host.strip("[]"),
            "PGPORT": port,
            "PGDATABASE": minted.database or "",
            "PGUSER": user,
            "PGPASSWORD": minted.token,
            "PGSSLMODE": "verify-full",
            "PGSSLROOTCERT": str(ca_bundle),
            "JITGATE_JTI": minted.jti,
        }
    )
    return env
def store_variables(minted: Minted) -> dict[str, str]:
    """CHROMA_HOST/PORT/SSL and the token as CHROMA_API_KEY for a Chroma connection, so that

    `chromadb.HttpClient(host=os.environ["CHROMA_HOST"], port=int(os.environ["CHROMA_PORT"]),
    ssl=os.environ["CHROMA_SSL"] == "true", headers={"x-chroma-token": os.environ["CHROMA_API_KEY"]})`
    reaches the store through the gateway unchanged (the proxy variables carry it there).
    """
    if minted.dialect != "chroma" or not minted.upstream:
        return {}
    url = urlsplit(minted.upstream)
    ssl = url.scheme == "https"
    return {
        "CHROMA_HOST": url.hostname or "",
        "CHROMA_PORT": str(url.port or (443 if ssl else 80)),
        "CHROMA_SSL": "true" if ssl else "false",
        "CHROMA_API_KEY": minted.token,
    }


def ecosystem_environment(job: JobEnv, *, upstream: str | None = None) -> dict[str, str]:
    """What clients beyond Python's read (issue 25, item 2; README "Clients under jitgate run").

    Node reads its extra roots from NODE_EXTRA_CA_CERTS (not SSL_CERT_FILE) and, from Node 24 on,
    the proxy variables only with NODE_USE_ENV_PROXY=1. NO_PROXY replaces an inherited one: a job
    must not bypass the gateway for its upstream; only loopback and the broker go direct, and
    neither when the connection's client is pointed at them (`upstream`: a store on loopback, as in
    the dev stack, whose CHROMA_HOST would otherwise skip the gateway).
    """
    up_host = urlsplit(upstream).hostname if upstream else None
    no_proxy = [] if up_host in LOOPBACK_NO_PROXY else list(LOOPBACK_NO_PROXY)
    broker_host = urlsplit(job.broker).hostname if job.broker else None
    if broker_host and broker_host not in no_proxy and broker_host != up_host:
        no_proxy.append(broker_host)
    joined = ",".join(no_proxy)
    return {
        "NODE_EXTRA_CA_CERTS": str(job.ca_bundle),
        "NODE_USE_ENV_PROXY": "1",
        "NO_PROXY": joined,
        "no_proxy": joined,
    }


def run_job(cmd: Sequence[str], env: Mapping[str, str]) -> int:
    """Run `cmd` and return its exit status; Ctrl-C and SIGTERM go to the job, not to us.

    The caller revokes the token afterwards, so this function must come back even when the
    user interrupts: SIGINT is ignored here (the terminal already sent it to the job's process
    group) and SIGTERM is forwarded.
    """
    try:
        proc = subprocess.Popen(list(cmd), env=dict(env))
    except OSError as exc:
        raise FileNotFoundError(f"cannot start {cmd[0]!r}: {exc.strerror}") from None

    def _forward(signum: int, _frame: FrameType | None) -> None:
        with suppress(ProcessLookupError):
            proc.send_signal(signum)

    old_int = signal.signal(signal.SIGINT, _forward)
    old_term = signal.signal(signal.SIGTERM, _forward)
    try:
        rc = proc.wait()
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
    return 128 - rc if rc < 0 else rc
