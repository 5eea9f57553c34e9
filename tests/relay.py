"""A TCP relay on loopback that a test can cut off: the one fault injector of the e2e and reliability tests.

Put it in front of a service (moto for one AWS service, S3 for the recorder, the broker for the
JWKS) and point the client at `relay.url`. `relay.up = False` resets every open connection and
refuses new ones with a reset, so a pooled keep-alive client (boto3, httpx) loses its open
connection too, as it would in a real outage; `relay.up = True` lets connections through again.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

_RST = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # SO_LINGER on, 0 s: close() sends a reset


class Relay:
    """Forward a loopback port to `target`; `up = False` resets every open connection and refuses new ones."""

    def __init__(self, target: tuple[str, int], *, record: bool = False) -> None:
        self.target = target
        self.record = record
        self._up = True
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = int(self._sock.getsockname()[1])
        self._closed = False
        self.sent = bytearray()  # with `record`: every byte clients sent through it (what the upstream got)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def up(self) -> bool:
        return self._up

    @up.setter
    def up(self, value: bool) -> None:
        self._up = value
        if not value:
            with self._lock:
                victims = list(self._open)
                self._open.clear()
            for s in victims:
                self._reset(s)

    @staticmethod
    def _reset(s: socket.socket) -> None:
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
        with contextlib.suppress(OSError):
            s.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if not self._up:
                self._reset(conn)
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                self._reset(conn)
                continue
            with self._lock:
                self._open.update((conn, upstream))
            for a, b, record in ((conn, upstream, self.record), (upstream, conn, False)):
                threading.Thread(target=self._pump, args=(a, b, record), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool = False) -> None:
        try:
            while data := src.recv(65536):
                if record:
                    with self._lock:
                        self.sent += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._open.discard(src)
                self._open.discard(dst)

    def close(self) -> None:
        self._closed = True
        self._sock.close()
        self.up = False


@contextmanager
def relay_to(url: str, *, record: bool = False) -> Iterator[Relay]:
    """A Relay in front of `url`'s host and port, closed on exit; `.up = False` cuts it off."""
    target = urlparse(url)
    relay = Relay((target.hostname or "127.0.0.1", target.port or 80), record=record)
    try:
        yield relay
    finally:
        relay.close()
