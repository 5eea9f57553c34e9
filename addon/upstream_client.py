"""The gateway's own requests to an upstream, and how a request is pointed at one (not an addon
of the chain): the credential set on a request, the CA bundle of public roots plus a private CA,
and one httpx client with the upstream trust settings for credential_inject's resend after a 401
and scope_guard's store lookups.

mitmproxy's `ssl_verify_upstream_trusted_ca` replaces the public roots, so a combined bundle is written.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

import certifi
import httpx
from mitmproxy import ctx, http

from addon import settings
from jitgate import credentials
from jitgate.policy import Connection


def apply_credential(request: http.Request, conn: Connection, secret: str) -> None:
    """Strip client credentials, set the connection's header and point at the real upstream."""
    present = {name.lower() for name in request.headers}
    for name in credentials.stripped_headers(conn):
        if name.lower() in present:  # one pass over the headers instead of one per name
            request.headers.pop(name, None)
    name, value = credentials.credential_header(conn, secret)
    request.headers[name] = value
    # Always set: the setters also rewrite the Host header / authority to the upstream's.
    request.scheme, request.port, request.host = credentials.upstream_target(conn)


def combined_bundle(private_ca: str) -> str:
    """A CA file holding the public roots plus `private_ca`, written owner-only; its path."""
    try:
        extra = Path(private_ca).read_bytes()
    except OSError as exc:
        raise settings.options_error(f"jitgate_upstream_ca: cannot read {private_ca}: {exc.strerror}") from None
    if b"BEGIN CERTIFICATE" not in extra:
        raise settings.options_error(f"jitgate_upstream_ca: {private_ca} holds no PEM certificate")
    fd, path = tempfile.mkstemp(prefix="jitgate-upstream-ca-", suffix=".pem")
    with os.fdopen(fd, "wb") as out:
        out.write(Path(certifi.where()).read_bytes() + b"\n" + extra)
    return path


class UpstreamClient:
    """One httpx client, built on first use with the trust settings of that moment (`reset` after they change)."""

    def __init__(self) -> None:
        self._http: httpx.AsyncClient | None = None
        self._bundle: str | None = None

    def trust(self, private_ca: str) -> None:
        """Upstreams are trusted by the public roots plus `private_ca` (mitmproxy's and this client)."""
        self._bundle = combined_bundle(private_ca)
        ctx.options.update(ssl_verify_upstream_trusted_ca=self._bundle)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        if self._bundle is not None:
            Path(self._bundle).unlink(missing_ok=True)

    def reset(self) -> None:
        self._http = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(verify=_verify(), timeout=30.0, follow_redirects=False)
        return self._http

    async def get_as(self, conn: Connection, secret: str, path: str) -> tuple[int, bytes]:
        """GET `path` at the connection's upstream with `secret` in its credential header: (status, body)."""
        header = {conn.credential.header: conn.credential.format.replace("{secret}", secret)}
        resp = await self._client().get(conn.upstream.rstrip("/") + path, headers=header)
        return resp.status_code, resp.content

    async def resend(self, request: http.Request) -> http.Response:
        client = self._client()
        fields = request.headers.items(multi=True)  # type: ignore[no-untyped-call]
        headers = [(k, v) for k, v in fields if k.lower() not in credentials.HOP_BY_HOP]
        req = client.build_request(request.method, request.url, headers=headers, content=request.raw_content)
        resp = await client.send(req, stream=True)
        try:
            body = b"".join([chunk async for chunk in resp.aiter_raw()])
        finally:
            await resp.aclose()
        dropped = credentials.HOP_BY_HOP | {"content-length"}
        out_headers = [(k.encode(), v.encode()) for k, v in resp.headers.multi_items() if k.lower() not in dropped]
        out_headers.append((b"content-length", str(len(body)).encode()))
        answer = http.Response.make(resp.status_code, b"", http.Headers(out_headers))
        answer.raw_content = body  # as the upstream encoded it; its headers say how
        return answer


def _verify() -> ssl.SSLContext | bool:
    if ctx.options.ssl_insecure:
        return False
    return ssl.create_default_context(cafile=ctx.options.ssl_verify_upstream_trusted_ca or certifi.where())
