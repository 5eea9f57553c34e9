"""The upstream credential of a connection: what a secret holds, where it goes, when it is stale.

`secret_value` reads the credential out of a secret string (optionally one key of a JSON
secret); `credential_header` says which header carries it and how it is written; `STRIPPED`
plus the connection's own header are what a client may not send itself; `upstream_target` is
where the request really goes; `SecretMemo` keeps each secret for `ttl` seconds by the
clock handed in and `SecretSource` reads them through it (one read at a time, a new cache past
the TTL, rotation after a 401); `retry_after_401` says whether one more try with a fresh secret makes sense.
No mitmproxy or boto3 here: the HTTP addon (addon/credential_inject.py) applies the answers.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

from jitgate.dialects import CLIENT_CREDENTIAL_HEADERS
from jitgate.policy import Connection

logger = logging.getLogger(__name__)

# Headers never forwarded upstream as the client sent them (hop-by-hop, RFC 9110 7.6.1).
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"})


def secret_value(raw: str | None, json_key: str | None) -> str:
    """The credential inside a secret string, optionally one key of a JSON secret."""
    if raw is None:
        raise ValueError("secret has no string value")
    if json_key is None:
        value: object = raw
    else:
        doc = json.loads(raw)
        value = doc.get(json_key) if isinstance(doc, dict) else None
    if not isinstance(value, str) or not value:
        raise ValueError("secret has no usable value")
    return value


def stripped_headers(conn: Connection) -> tuple[str, ...]:
    """The client-supplied credential headers removed before the real one is set."""
    return (*CLIENT_CREDENTIAL_HEADERS, conn.credential.header)


def credential_header(conn: Connection, secret: str) -> tuple[str, str]:
    """(name, value) of the header that carries `secret` in the connection's format."""
    return conn.credential.header, conn.credential.format.replace("{secret}", secret)


def upstream_target(conn: Connection) -> tuple[str, int, str]:
    """(scheme, port, host) of the connection's real upstream."""
    return _target(conn.upstream, conn.upstream_host)


@functools.lru_cache(maxsize=256)
def _target(upstream: str, upstream_host: str) -> tuple[str, int, str]:
    target = urlsplit(upstream)  # parsed once per URL
    return target.scheme, target.port or (443 if target.scheme == "https" else 80), target.hostname or upstream_host


def retry_after_401(status: int | None, *, injected: bool, retried: bool) -> bool:
    """One more try with a refreshed secret: only for a 401 to the credential the gateway set, once."""
    return status == 401 and injected and not retried


class SecretMemo:
    """Secret values by id, each good for `ttl` seconds after it was read (`monotonic` clock)."""

    def __init__(self, ttl: float, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._monotonic = monotonic
        self._values: dict[str, tuple[str, float]] = {}

    def fresh(self, secret_id: str) -> str | None:
        """The value if it was read less than `ttl` seconds ago."""
        hit = self._values.get(secret_id)
        if hit is None or self._monotonic() - hit[1] >= self.ttl:
            return None
        return hit[0]

    def __contains__(self, secret_id: object) -> bool:
        """True when a value was read once (fresh or past its TTL)."""
        return secret_id in self._values

    def put(self, secret_id: str, value: str) -> None:
        self._values[secret_id] = (value, self._monotonic())

    def clear(self) -> None:
        self._values.clear()

    def oldest_age(self) -> float:
        """Seconds since the oldest value held was read (0 with none): the secret cache's age."""
        now = self._monotonic()
        return max((now - read for _value, read in list(self._values.values())), default=0.0)


class SecretReader(Protocol):
    """What reads a secret's string (aws_secretsmanager_caching's SecretCache, in the gateway)."""

    def get_secret_string(self, secret_id: str) -> str | None: ...


class SecretSource:
    """The connections' upstream secrets: read through one cache per secret id, held `ttl` seconds
    in memory so the hot path makes no call (`fresh`). `new_reader` makes a cache (it may read the
    client it wraps anew each time). One read at a time, so a burst of first requests makes one
    call; a value past its TTL is read through a new cache, since a cache whose refresh fails
    hands back its old value (the store unreachable must then mean unavailable, not stale)."""

    def __init__(
        self, ttl: float, new_reader: Callable[[], SecretReader], *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.memo = SecretMemo(ttl, monotonic=monotonic)
        self._new_reader = new_reader
        self._readers: dict[str, SecretReader] = {}
        self._lock = threading.Lock()

    def fresh(self, conn: Connection) -> str | None:
        """The connection's secret if it was read less than `ttl` seconds ago (no IO)."""
        return self.memo.fresh(conn.credential.secret_id)

    def get(self, conn: Connection) -> str:
        """The connection's secret (blocking on a miss: run it in a thread); errors pass through."""
        cred = conn.credential
        with self._lock:
            value = self.fresh(conn)
            if value is None:
                if cred.secret_id in self.memo:
                    self._readers.pop(cred.secret_id, None)
                reader = self._readers.get(cred.secret_id)
                if reader is None:
                    reader = self._readers[cred.secret_id] = self._new_reader()
                value = secret_value(reader.get_secret_string(cred.secret_id), cred.json_key)
                self.memo.put(cred.secret_id, value)
        return value

    def rotate(self, conn: Connection) -> str | None:
        """Read the secret afresh through a new cache; None (the old one kept) when that fails."""
        cred = conn.credential
        fresh = self._new_reader()
        try:
            value = secret_value(fresh.get_secret_string(cred.secret_id), cred.json_key)
        except Exception as exc:
            logger.warning("jitgate: secret refresh for %s failed (%s)", conn.name, type(exc).__name__)
            return None
        with self._lock:
            self._readers[cred.secret_id] = fresh
            self.memo.put(cred.secret_id, value)
        return value

    def set_ttl(self, ttl: float) -> None:
        """A new TTL: the values read so far are read again (through the caches they came from)."""
        with self._lock:
            self.memo.ttl = ttl
            self.memo.clear()

    def reset(self) -> None:
        """Forget every value and cache (a new policy or Secrets Manager client)."""
        with self._lock:
            self._readers.clear()
            self.memo.clear()
