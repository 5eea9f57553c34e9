"""The full gateway chain on real processes, for the fault and hostile-input tests.

`full_gateway(...)` starts `mitmdump -s addon/jitgate_addons.py` with every addon on, its spool
in the work folder and its records shipped to the audit bucket. AWS endpoints can be given per
service (`aws_env`), so a test cuts one service off with a `Relay` (tests/relay.py) and leaves the
others up.
`kms_token(...)` signs arbitrary headers and claims with the broker's own KMS key, so a test can
present a token that only its claims (or header) make wrong. `records(...)` reads every session
record the gateway wrote, shipped or still in its spool.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import yaml

from jitgate.devstack.aws import Stack
from jitgate.devstack.gateway import Gateway, jitgate_options, start_gateway
from jitgate.devstack.policy import policy_dict
from jitgate.devstack.upstream import Upstream
from jitgate.token import AUDIENCE, der_to_raw_signature, new_jti
from tests.bombs import bomb

CI_SUB = "repo:acme/search-ranker:ref:refs/heads/main"
DOCS = [
    "Carson City is the capital city of the American state of Nevada.",
    "Washington, D.C. is the capital of the United States.",
    "Capital punishment has existed in the United States since before it was a country.",
]
QUERY = "What is the capital of the United States?"


def write_policy(
    work: Path, issuer: str, upstream: Upstream, *, limits: Mapping[str, int] | None = None,
    upstreams: Mapping[str, str] | None = None,
) -> Path:
    """The dev policy with cohere-test at `upstream` and store-test at its other name (`localhost`,
    the same port: a second connection's host), and `upstreams` over that. On store-test only
    refusals are tested, or answers a scripted upstream plays (framings no store sends): a store's
    own answers come from the real Chroma, as chroma-dev in `upstreams`."""
    upstreams = {"cohere-test": upstream.url, "store-test": f"https://localhost:{upstream.port}", **(upstreams or {})}
    doc = policy_dict(issuer, upstreams=upstreams)
    if limits is not None:
        doc["grants"][0]["limits"] = dict(limits)  # type: ignore[index]
    path = work / "policy.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def full_gateway(
    work: Path,
    *,
    policy: Path,
    upstream: Upstream,
    broker: str,
    stack: Stack,
    moto: str,
    gateway_id: str,
    jwks_url: str | None = None,
    aws_env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    **options: str,
) -> Gateway:
    """Start the whole chain. With `aws_env`, boto3 in the gateway finds AWS through the environment
    (AWS_ENDPOINT_URL plus per-service AWS_ENDPOINT_URL_<SERVICE>) instead of one endpoint option."""
    ca = work / "upstream-ca.pem"
    ca.write_bytes(upstream.ca_pem())
    opts = jitgate_options(
        policy=policy,
        jwks_url=jwks_url or f"{broker}/.well-known/jwks.json",
        table=stack.table,
        aws_endpoint=moto,
        region=stack.region,
        upstream_ca=ca,
        revocation_refresh=0.5,
        revocation_staleness=3.0,
    )
    opts.update(
        {
            "jitgate_issuer": broker,
            "jitgate_bucket": stack.bucket,
            "jitgate_spool_dir": str(work / "spool"),
            "jitgate_gateway_id": gateway_id,
            "jitgate_segment_ms": "300",
            "jitgate_fsync_ms": "100",
            "jitgate_upload_backoff_max_ms": "1000",
            **options,
        }
    )
    env = dict(os.environ)
    env["AWS_MAX_ATTEMPTS"] = "1"  # a cut-off service fails at once instead of after retries
    if aws_env is not None:
        opts["jitgate_aws_endpoint"] = ""
        env.update(aws_env)
    return start_gateway(work / "gw", options=opts, env=env, extra_args=extra_args)


def client(gateway: Gateway, bundle: Path, token: str | None, **kwargs: Any) -> httpx.Client:
    """An httpx client going through the gateway with `token` as proxy credentials."""
    return httpx.Client(proxy=gateway.proxy_url(token), verify=str(bundle), trust_env=False, timeout=30, **kwargs)


def rerank(c: httpx.Client, upstream: Upstream, marker: str = "", **kwargs: Any) -> httpx.Response:
    body = {"model": "rerank-v3.5", "query": f"{QUERY} {marker}".strip(), "documents": DOCS}
    return c.post(f"{upstream.url}/v2/rerank", json=body, headers={"Authorization": "Bearer placeholder"}, **kwargs)


# -- tokens signed by the broker's KMS key -------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_for(broker: str, connection: str = "cohere-test", **over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": broker,
        "aud": AUDIENCE,
        "sub": CI_SUB,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": new_jti(),
        "conn": connection,
        "scope": {"operations": ["rerank"]},
        "limits": {},
        "mask": "default",
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def sign_with(sign_der: Callable[[bytes], bytes], header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
    signing_input = _b64(json.dumps(dict(header)).encode()) + "." + _b64(json.dumps(dict(claims)).encode())
    return signing_input + "." + _b64(der_to_raw_signature(sign_der(signing_input.encode())))


def kms_signer(stack: Stack, moto: str) -> Callable[[bytes], bytes]:
    kms = boto3.client("kms", endpoint_url=moto, region_name=stack.region)

    def sign(message: bytes) -> bytes:
        sig: bytes = kms.sign(KeyId=stack.key_id, Message=message, MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256")[
            "Signature"
        ]
        return sig

    return sign


def kms_token(stack: Stack, moto: str, broker: str, *, header: Mapping[str, Any] | None = None, **over: Any) -> str:
    """A token signed by the broker's KMS key with the given claim overrides (and extra header fields)."""
    head = {"alg": "ES256", "typ": "JWT", "kid": stack.key_id, **(header or {})}
    return sign_with(kms_signer(stack, moto), head, claims_for(broker, **over))


# -- records -------------------------------------------------------------------------------------


def records(moto: str, bucket: str, gateway_id: str, spool: Path | None = None) -> list[dict[str, Any]]:
    """Every session record of `gateway_id`: shipped to the bucket, plus what is still in `spool`."""
    s3 = boto3.client("s3", endpoint_url=moto)
    out: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="sessions/"):
        for obj in page.get("Contents", []):
            if f"/{gateway_id}-" in obj["Key"]:
                body = gzip.decompress(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
                out += [json.loads(line) for line in body.splitlines() if line.strip()]
    if spool is not None:
        for path in spool.rglob("*.jsonl"):
            out += [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return out


def raw_record_bytes(moto: str, bucket: str, gateway_id: str, spool: Path) -> bytes:
    """All record bytes, undecoded: to assert a value appears nowhere, whatever field it hides in."""
    s3 = boto3.client("s3", endpoint_url=moto)
    blob = b""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="sessions/"):
        for obj in page.get("Contents", []):
            if f"/{gateway_id}-" in obj["Key"]:
                blob += gzip.decompress(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
    for path in spool.rglob("*"):
        if path.is_file():
            blob += path.read_bytes()
    return blob


def peak_rss(pid: int) -> int:
    """VmHWM: the most resident memory the process ever had, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.3) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


@dataclass(frozen=True)
class Seen:
    """A request a scripted upstream received."""

    head: bytes
    body: bytes

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode("latin-1")
        return None


def http_answer(
    status: int, headers: Mapping[str, str], body: bytes = b"{}", *, chunks: list[bytes] | None = None
) -> bytes:
    """Raw HTTP/1.1 answer bytes: with `chunks`, chunked framing; else Content-Length."""
    lines = [f"HTTP/1.1 {status} OK", "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    if chunks is None:
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    lines.append("Transfer-Encoding: chunked")
    framed = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks if c) + b"0\r\n\r\n"
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + framed


class FaultyUpstream:
    """A TLS server (cert from `ca`) that reads one request head and then misbehaves.

    mode "reset": closes with RST; "hang": never answers (until `release()`); "ok": a small 200 JSON;
    "bomb": a 200 JSON whose gzip body (`bomb`, with Content-Length) decodes to `bomb_size` bytes;
    "bomb-stream": the same bomb chunked, and then silence (no last chunk) until the gateway closes;
    "truncate": response headers and the start of the body, then a close; "huge": response headers
    announcing `bomb_size` bytes, then silence; "script": reads the whole request, keeps it in
    `seen` and writes the raw bytes `answer(seen)` returns (any framing, headers or encoding: see
    `http_answer`), then closes.
    """

    bomb_size = 200 * 1024 * 1024

    def __init__(self, ca: Any, mode: str = "reset") -> None:
        import socket
        import ssl
        import threading

        self.mode = mode
        self.seen: list[Seen] = []
        self.answer: Callable[[Seen], bytes] = lambda seen: http_answer(200, {"Content-Type": "application/json"})
        self.accepted = 0
        self.closed = 0  # "hang": connections the gateway closed while the upstream said nothing
        self._release = threading.Event()
        self.bomb = bomb("gzip", self.bomb_size) if mode.startswith("bomb") else b""
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self._ca_pem: bytes = ca.cert_pem.bytes()
        self._ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self._ctx)
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = int(self._sock.getsockname()[1])
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def release(self) -> None:
        self._release.set()

    def ca_pem(self) -> bytes:
        return self._ca_pem

    def _accept(self) -> None:
        import threading

        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, raw: Any) -> None:
        import contextlib
        import socket
        import ssl

        try:
            conn = self._ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        with contextlib.suppress(OSError):
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            if self.mode == "hang":
                self._hang(conn)
            elif self.mode == "bomb":
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                conn.sendall(head + b"Content-Length: " + str(len(self.bomb)).encode() + b"\r\n\r\n" + self.bomb)
                self._hang(conn)  # keep-alive: the gateway may close it or keep it
                return
            elif self.mode == "bomb-stream":
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                conn.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
                try:
                    for i in range(0, len(self.bomb), 16 * 1024):
                        piece = self.bomb[i : i + 16 * 1024]
                        conn.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                except OSError:
                    self.closed += 1  # the gateway stopped reading it and closed
                    return
                self._hang(conn)
                return
            elif self.mode == "huge":
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                conn.sendall(head + str(self.bomb_size).encode() + b"\r\n\r\n")
                self._hang(conn)
                return
            elif self.mode == "truncate":
                self._read_body(conn, data)  # unread request bytes would turn the close into a reset
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                conn.sendall(head + b'{"results": [')  # then a close, 987 bytes short
                return  # an orderly close (FIN): the head is read before the end, on any machine
            elif self.mode == "script":
                seen = Seen(data.partition(b"\r\n\r\n")[0], self._read_body(conn, data))
                self.seen.append(seen)
                conn.sendall(self.answer(seen))
                conn.close()
                return
            elif self.mode == "ok":
                body = b'{"results": []}'
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(body)).encode() + b"\r\n\r\n" + body
                )
                return
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        with contextlib.suppress(OSError):
            raw.close()

    @staticmethod
    def _read_body(conn: Any, data: bytes) -> bytes:
        """Read the rest of a request whose head (and maybe part of its body) is in `data`."""
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(Seen(head, b"").header("content-length") or 0)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        return body

    def _hang(self, conn: Any) -> None:
        """Say nothing until `release()`; count it when the gateway closes the connection first."""
        conn.settimeout(0.2)
        while not self._release.is_set():
            try:
                if not conn.recv(65536):
                    self.closed += 1
                    return
            except TimeoutError:
                continue
            except OSError:
                self.closed += 1
                return

    def close(self) -> None:
        self._closed = True
        self._release.set()
        self._sock.close()


class Load:
    """Background load: `threads` keep-alive clients send reranks until `stop()`; every answer is logged.

    `log` holds (start, end, status, code, marker) per request, start/end in time.monotonic().
    """

    def __init__(
        self, make_client: Callable[[], httpx.Client], upstream_url: str, threads: int = 4, pause: float = 0.1
    ) -> None:
        import secrets
        import threading

        self.log: list[tuple[float, float, int, str, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._make_client = make_client
        self._url = upstream_url
        self._token = secrets.token_hex(3)
        self._n = 0
        # Paced, not flat out: the test token's budget is 1,000 requests (the dev policy's
        # max_requests), and an idle machine would spend it within a 30 s fault window.
        self._pause = pause
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def count(self) -> int:
        with self._lock:
            return len(self.log)

    def _run(self) -> None:
        with self._make_client() as c:
            while not self._stop.is_set():
                with self._lock:
                    self._n += 1
                    marker = f"mk{self._token}x{self._n:06d}"
                body = {"model": "rerank-v3.5", "query": f"{marker} {QUERY}", "documents": DOCS}
                begin = time.monotonic()
                try:
                    resp = c.post(f"{self._url}/v2/rerank", json=body, headers={"Authorization": "Bearer placeholder"})
                    status = resp.status_code
                    code = "" if status == 200 else str(resp.json().get("code", "?"))
                except (httpx.HTTPError, ValueError) as exc:
                    status, code = 0, type(exc).__name__
                with self._lock:
                    self.log.append((begin, time.monotonic(), status, code, marker))
                time.sleep(self._pause)


def outcome_counts(log: list[tuple[float, float, int, str, str]]) -> dict[tuple[int, str], int]:
    counts: dict[tuple[int, str], int] = {}
    for _, _, status, code, _ in log:
        counts[(status, code)] = counts.get((status, code), 0) + 1
    return counts


def record_counts(recs: list[dict[str, Any]]) -> dict[tuple[int, str], int]:
    """Records of the load's rerank flows (not the start-up probe), by (status, error code)."""
    counts: dict[tuple[int, str], int] = {}
    for r in recs:
        if str(r.get("host", "")).endswith(".invalid") or r.get("method") == "CONNECT":
            continue
        key = (int(r["status"]), str(r.get("error") or ""))
        counts[key] = counts.get(key, 0) + 1
    return counts
