"""A local OIDC identity provider on loopback: discovery, a JWKS with real RSA keys, and `mint`.

It stands in for GitHub Actions / EKS / any OIDC issuer in tests, the demo and `jitgate dev`.
`POST /dev/token {"sub", "aud", "claims"}` mints over HTTP for the CLI's dev source; it exists
only here, on loopback, and never in the broker.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from jitgate.errors import BadRequest, NotFound

DEFAULT_AUDIENCE = "jitgate"
_MAX_BODY = 64 * 1024


class OidcIssuer:
    """An OIDC issuer serving `/.well-known/openid-configuration` and `/jwks.json` over HTTP."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._keys: dict[str, rsa.RSAPrivateKey] = {}
        self.kid = self.add_key()
        self.jwks_requests = 0
        self.discovery_requests = 0
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        bound_host, bound_port = self._server.server_address[:2]
        self.url = f"http://{bound_host!s}:{bound_port}"

    # -- keys ---------------------------------------------------------------------------------

    def add_key(self) -> str:
        """Add (rotate in) a new RSA signing key; later `mint` calls use it. Returns its kid."""
        kid = uuid.uuid4().hex[:16]
        self._keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = kid
        return kid

    def private_key(self, kid: str | None = None) -> rsa.RSAPrivateKey:
        return self._keys[kid or self.kid]

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self._keys.items():
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
            keys.append(jwk)
        return {"keys": keys}

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "jwks_uri": f"{self.url}/jwks.json",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    # -- tokens -------------------------------------------------------------------------------

    def claims(
        self,
        sub: str,
        claims: Mapping[str, Any] | None = None,
        *,
        ttl: int = 300,
        aud: str | list[str] = DEFAULT_AUDIENCE,
        now: float | None = None,
    ) -> dict[str, Any]:
        """The claims `mint` would sign; `claims` overrides or adds (None values drop a claim)."""
        t = int(time.time() if now is None else now)
        body: dict[str, Any] = {
            "iss": self.url,
            "aud": aud,
            "sub": sub,
            "iat": t,
            "nbf": t,
            "exp": t + ttl,
            "jti": uuid.uuid4().hex,
        }
        for name, value in (claims or {}).items():
            if value is None:
                body.pop(name, None)
            else:
                body[name] = value
        return body

    def mint(
        self,
        sub: str,
        claims: Mapping[str, Any] | None = None,
        *,
        ttl: int = 300,
        aud: str | list[str] = DEFAULT_AUDIENCE,
        now: float | None = None,
        kid: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """An RS256 identity token for `sub`, signed with the current (or named) key."""
        use = kid or self.kid
        body = self.claims(sub, claims, ttl=ttl, aud=aud, now=now)
        return jwt.encode(body, self._keys[use], algorithm="RS256", headers={"kid": use, **(headers or {})})

    # -- server -------------------------------------------------------------------------------

    def start(self) -> OidcIssuer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="oidc-issuer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OidcIssuer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler_for(issuer: OidcIssuer) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, body: Mapping[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/.well-known/openid-configuration":
                issuer.discovery_requests += 1
                self._send(200, issuer.discovery())
            elif path == "/jwks.json":
                issuer.jwks_requests += 1
                self._send(200, issuer.jwks())
            else:
                self._send(404, NotFound("no such path").to_dict())

        def do_POST(self) -> None:
            if self.path.split("?", 1)[0] != "/dev/token":
                self._send(404, NotFound("no such path").to_dict())
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                if length > _MAX_BODY:
                    raise ValueError("body too large")
                req = json.loads(self.rfile.read(length) or b"{}")
                sub = req["sub"]
                extra = req.get("claims") or {}
                if not isinstance(sub, str) or not sub or not isinstance(extra, dict):
                    raise ValueError("bad fields")
                aud = req.get("aud") or DEFAULT_AUDIENCE
                ttl = int(req.get("ttl") or 300)
            except (ValueError, KeyError, TypeError):
                self._send(400, BadRequest("expected JSON {sub, aud?, ttl?, claims?}").to_dict())
                return
            self._send(200, {"token": issuer.mint(sub, extra, ttl=ttl, aud=aud)})

    return _Handler
