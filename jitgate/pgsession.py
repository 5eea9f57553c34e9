"""What a Postgres session carries besides statements: the identity settings RLS reads, and cancel keys.

Identity settings. The gateway opens every upstream session with `jitgate.sub`, `jitgate.job`,
`jitgate.connection` and `jitgate.groups` (the token's groups, comma-joined; a group holding a comma
is left out, as it could not be told apart) in the startup packet's `options` (`-c name=value`),
not with a SET after login: a value given at startup is the session's *default*, so `RESET ALL`,
`RESET jitgate.sub` and `DISCARD ALL` bring it back rather than clearing it. The client cannot SET,
RESET or `set_config()` a `jitgate.*` name (jitgate.pgsql refuses them), nor send startup options.

Cancel keys. A client gets BackendKeyData of the gateway's own; its CancelRequest is looked up
here and, when it names a live session, the listener sends that session's server key to the server
on a fresh connection. The lookup is by a keyed hash of the whole key (process id and secret): its
time does not depend on how much of a guess is right, and an unknown key does nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from collections.abc import Sequence

from jitgate.errors import SessionSettingsInvalid
from jitgate.pgwire import CANCEL_REQUEST

PREFIX = "jitgate."
# The server reads at most 10000 bytes of startup packet; the rest of it (user, database, ...) fits in the margin.
MAX_OPTIONS = 8000
_SPACE = frozenset(" \t\n\r\v\f\\")  # the server splits `options` on C whitespace; a backslash escapes


def identity_settings(
    *, sub: str, job: str | None, connection: str, groups: Sequence[str] | None
) -> dict[str, str]:
    """The `jitgate.*` settings of a session, by name (each value a plain string; empty when unknown)."""
    kept = [g for g in groups or () if g and "," not in g]
    return {
        f"{PREFIX}sub": sub,
        f"{PREFIX}job": job or "",
        f"{PREFIX}connection": connection,
        f"{PREFIX}groups": ",".join(kept),
    }


def _escape(value: str) -> str:
    return "".join("\\" + ch if ch in _SPACE else ch for ch in value)


def startup_options(settings: dict[str, str]) -> str:
    """The startup packet's `options` value that sets each of `settings` (`-c name=value`, escaped)."""
    parts = []
    for name, value in settings.items():
        if "\0" in name or "\0" in value:
            raise SessionSettingsInvalid("a setting holds a NUL character")
        parts.append(f"-c {_escape(name)}={_escape(value)}")
    text = " ".join(parts)
    if len(text.encode("utf-8")) > MAX_OPTIONS:
        raise SessionSettingsInvalid("the token's identity (sub, job, groups) is too long for session settings")
    return text


def is_identity_setting(name: str) -> bool:
    """Whether a setting name (as the parser gives it) is one of the gateway's: the server folds case."""
    return name.lower().startswith(PREFIX)


class CancelKeys[T]:
    """BackendKeyData of the gateway's own, each naming one live session (`T`)."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._live: dict[bytes, T] = {}

    def _digest(self, key: bytes) -> bytes:
        return hmac.new(self._key, key, hashlib.sha256).digest()

    def issue(self, session: T) -> bytes:
        """A fresh BackendKeyData body (process id, secret: 8 bytes) for `session`."""
        while True:
            pid = secrets.randbelow(0x7FFFFFFF) + 1
            key = struct.pack("!I", pid) + secrets.token_bytes(4)
            digest = self._digest(key)
            if digest not in self._live:
                self._live[digest] = session
                return key

    def find(self, key: bytes) -> T | None:
        """The session a CancelRequest's key (the 8 bytes after its code) names, or None."""
        if len(key) != 8:
            return None
        return self._live.get(self._digest(key))

    def forget(self, key: bytes) -> None:
        self._live.pop(self._digest(key), None)

    def __len__(self) -> int:
        return len(self._live)


def cancel_request(server_key: bytes) -> bytes:
    """The CancelRequest a server reads: length, code, and its own BackendKeyData body."""
    return struct.pack("!II", 8 + len(server_key), CANCEL_REQUEST) + server_key
