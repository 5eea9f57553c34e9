"""Serve the broker's Lambda handler over real HTTP on loopback, as API Gateway HTTP API v2 would.

`sam local start-api` needs a container engine; development machines and CI lack one, so the
end-to-end tests, the demo and `jitgate dev` use this adapter instead. Each request becomes
a v2 event for `broker.app.handler`; the handler's answer becomes the HTTP response. Calls are
serialised, as one Lambda container handles one event at a time.

    python -m broker.local --port 8000      # prints the base URL, then serves
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from jitgate.errors import BadRequest, JitgateError, PayloadTooLarge

MAX_BODY = 1024 * 1024
_LOCK = threading.Lock()


@dataclass(frozen=True)
class LocalContext:
    """The parts of a Lambda context that Powertools reads."""

    aws_request_id: str
    function_name: str = "jitgate-broker-local"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:jitgate-broker-local"
    log_group_name: str = "/aws/lambda/jitgate-broker-local"
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def to_event(
    method: str, target: str, headers: list[tuple[str, str]], body: bytes, *, source_ip: str, host: str
) -> dict[str, Any]:
    """An API Gateway HTTP API v2 (payload 2.0) event for one HTTP request."""
    path, _, query = target.partition("?")
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    params: dict[str, str] = {}
    for pair in filter(None, query.split("&")):
        k, _, v = pair.partition("=")
        params[k] = f"{params[k]},{v}" if k in params else v
    now = time.time()
    request_id = uuid.uuid4().hex
    try:
        text, is_b64 = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, is_b64 = base64.b64encode(body).decode("ascii"), True
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": merged,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": host,
            "domainPrefix": host.split(".", 1)[0],
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": merged.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "body": text if body else None,
        "isBase64Encoded": is_b64,
    }
    if cookies:
        event["cookies"] = cookies
    if params:
        event["queryStringParameters"] = params
    return event


def _handler_class() -> type[BaseHTTPRequestHandler]:
    from broker.app import handler

    class _Adapter(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "jitgate-broker-local"

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: Any) -> None:
            return  # the handler logs; the adapter would only repeat request lines

        def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() not in {"content-length", "connection", "transfer-encoding"}:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, error: JitgateError) -> None:
            self.close_connection = True  # the request body may be unread
            body = json.dumps(error.to_dict()).encode()
            self._reply(error.status, {"Content-Type": "application/json"}, body)

        def _serve(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                self._error(BadRequest("invalid Content-Length"))
                return
            if length < 0 or length > MAX_BODY:
                self._error(PayloadTooLarge("request body is too large"))
                return
            body = self.rfile.read(length) if length else b""
            host = self.headers.get("Host", "127.0.0.1")
            event = to_event(
                self.command, self.path, list(self.headers.items()), body, source_ip=self.client_address[0], host=host
            )
            try:
                with _LOCK:
                    result = handler(event, LocalContext(aws_request_id=event["requestContext"]["requestId"]))
            except Exception:  # what Lambda would turn into a 502; keep the server up
                self._error(JitgateError("the broker handler failed", status=502))  # as Lambda's 502
                return
            raw = result.get("body") or ""
            data = base64.b64decode(raw) if result.get("isBase64Encoded") else raw.encode()
            headers = dict(result.get("headers") or {})
            self._reply(int(result.get("statusCode", 500)), headers, data)

        do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

    return _Adapter


def serve(host: str = "127.0.0.1", port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Start the adapter in a daemon thread; return the server (call `shutdown()`) and its base URL."""
    server = ThreadingHTTPServer((host, port), _handler_class())
    server.daemon_threads = True
    bound_host, bound_port = server.server_address[:2]
    base_url = f"http://{bound_host!s}:{bound_port}"
    os.environ.setdefault("JITGATE_ISSUER", base_url)  # the broker's own URL, as in main()
    threading.Thread(target=server.serve_forever, name="broker-local", daemon=True).start()
    return server, base_url


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the jitgate broker on loopback (HTTP API v2 events).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    # Bind first: with --port 0 the broker's own URL (its token `iss`) is known only now.
    server = ThreadingHTTPServer((args.host, args.port), _handler_class())
    server.daemon_threads = True
    bound_host, bound_port = server.server_address[:2]
    base_url = f"http://{bound_host!s}:{bound_port}"
    os.environ.setdefault("JITGATE_ISSUER", base_url)
    print(base_url, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
