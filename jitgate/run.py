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

    gateway: str  # host:port
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
    proxy = f"http://jit:{minted.token}@{job.gateway}"
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        env[name] = proxy
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        env[name] = str(job.ca_bundle)
    for name in (job.key_env,) if isinstance(job.key_env, str) else job.key_env or ():
        env[name] = minted.token
    env["JITGATE_JTI"] = minted.jti
    env.update(ecosystem_environment(job))
    return env


def ecosystem_environment(job: JobEnv) -> dict[str, str]:
    """What clients beyond Python's read (issue 25, item 2; README "Clients under jitgate run").

    Node reads its extra roots from NODE_EXTRA_CA_CERTS (not SSL_CERT_FILE) and, from Node 24 on,
    the proxy variables only with NODE_USE_ENV_PROXY=1. NO_PROXY replaces an inherited one: a job
    must not bypass the gateway for its upstream; only loopback and the broker go direct.
    """
    no_proxy = list(LOOPBACK_NO_PROXY)
    broker_host = urlsplit(job.broker).hostname if job.broker else None
    if broker_host and broker_host not in no_proxy:
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
