"""PostgreSQL frontend/backend protocol v3: the messages the gateway reads and writes, as values.

Pure framing: reading a message needs a read function handed in (the listener's stream), the
rest takes and returns bytes. Lengths are checked before anything is buffered, so a client
cannot make the gateway hold more than `MAX_MESSAGE` bytes for one message.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

PROTOCOL_3_0 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
MAX_STARTUP = 10_000
MAX_MESSAGE = 16 * 1024 * 1024  # a statement longer than MAX_STATEMENT_BYTES is refused after reading
SQLSTATE_REFUSED = "42501"  # insufficient_privilege
SQLSTATE_AUTH = "28000"  # invalid_authorization_specification
SQLSTATE_PROTOCOL = "08P01"  # protocol_violation
SQLSTATE_LIMIT = "54000"  # program_limit_exceeded
SQLSTATE_UNAVAILABLE = "57P03"  # cannot_connect_now
SQLSTATE_ABORTED = "25P02"  # in_failed_sql_transaction

Reader = Callable[[int], Awaitable[bytes]]
READ_CHUNK = 256 * 1024


class WireError(ValueError):
    """A message the gateway cannot accept (bad length, bad framing); the connection ends."""


@dataclass(frozen=True)
class Message:
    type: bytes  # one byte
    body: bytes

    def raw(self) -> bytes:
        return self.type + struct.pack("!I", len(self.body) + 4) + self.body


async def read_message(read: Reader, *, limit: int = MAX_MESSAGE) -> Message:
    """One typed message; `read(n)` returns exactly n bytes (asyncio's readexactly)."""
    head = await read(5)
    (length,) = struct.unpack("!I", head[1:])
    if length < 4 or length - 4 > limit:
        raise WireError("message length out of range")
    return Message(head[:1], await read(length - 4) if length > 4 else b"")


class MessageReader:
    """Typed messages from a stream read in large chunks: `batch` hands out every message one read
    completed, so a burst of DataRows is relayed (and masked, and written) together.

    `read(n)` returns up to n bytes, b"" at the end (asyncio's `StreamReader.read`). A message's
    length is checked from its header before its body is waited for, as in `read_message`.
    """

    def __init__(self, read: Reader, *, chunk: int = READ_CHUNK, limit: int = MAX_MESSAGE) -> None:
        self._read = read
        self._chunk = chunk
        self._limit = limit
        self._buf = b""

    async def batch(self) -> list[Message]:
        """The complete messages buffered, reading when there is none; at least one.

        Raises asyncio.IncompleteReadError at the stream's end, WireError for a bad length."""
        while True:
            out, need = self._take()
            if out:
                return out
            parts = [self._buf]
            have = len(self._buf)
            while have < need:
                data = await self._read(max(self._chunk, need - have))
                if not data:
                    raise asyncio.IncompleteReadError(b"".join(parts), need)
                parts.append(data)
                have += len(data)
            self._buf = b"".join(parts)

    def _take(self) -> tuple[list[Message], int]:
        """The complete messages at the head of the buffer, and the bytes the next one needs."""
        buf = self._buf
        n = len(buf)
        pos = 0
        out: list[Message] = []
        while True:
            if n - pos < 5:
                need = 5
                break
            (length,) = struct.unpack_from("!I", buf, pos + 1)
            if length < 4 or length - 4 > self._limit:
                raise WireError("message length out of range")
            if n - pos < 1 + length:
                need = 1 + length
                break
            out.append(Message(buf[pos : pos + 1], buf[pos + 5 : pos + 1 + length]))
            pos += 1 + length
        if pos:
            self._buf = buf[pos:]
        return out, need


async def read_startup(read: Reader) -> tuple[int, bytes]:
    """The untyped first message: (code or protocol version, rest)."""
    (length,) = struct.unpack("!I", await read(4))
    if length < 8 or length > MAX_STARTUP:
        raise WireError("startup length out of range")
    body = await read(length - 4)
    return struct.unpack("!I", body[:4])[0], body[4:]


def startup_params(rest: bytes) -> dict[str, str]:
    parts = rest.split(b"\x00")
    if len(parts) < 2 or parts[-1] != b"" or parts[-2] != b"":
        raise WireError("startup parameters are not terminated")
    items = parts[:-2]
    if len(items) % 2:
        raise WireError("startup parameters are not pairs")
    try:
        return {items[i].decode(): items[i + 1].decode() for i in range(0, len(items), 2)}
    except UnicodeDecodeError:
        raise WireError("startup parameters are not UTF-8") from None


def startup_message(params: dict[str, str]) -> bytes:
    pairs = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items())
    body = struct.pack("!I", PROTOCOL_3_0) + pairs + b"\0"
    return struct.pack("!I", len(body) + 4) + body


def cstring(data: bytes, offset: int = 0) -> tuple[str, int]:
    """A NUL-terminated UTF-8 string at `offset`, and the offset after it."""
    end = data.find(b"\0", offset)
    if end < 0:
        raise WireError("string is not terminated")
    try:
        return data[offset:end].decode("utf-8"), end + 1
    except UnicodeDecodeError:
        raise WireError("string is not UTF-8") from None


def message(kind: bytes, body: bytes = b"") -> bytes:
    return Message(kind, body).raw()


def error_response(sqlstate: str, text: str, *, severity: str = "ERROR", code: str | None = None) -> bytes:
    """An ErrorResponse; `code` (a jitgate code) goes at the head of the message text."""
    shown = f"jitgate {code}: {text}" if code else text
    fields = b"S" + severity.encode() + b"\0V" + severity.encode() + b"\0C" + sqlstate.encode() + b"\0"
    fields += b"M" + shown.encode("utf-8", "replace") + b"\0"
    return message(b"E", fields + b"\0")


def ready_for_query(status: bytes) -> bytes:
    return message(b"Z", status)


def auth_request(kind: int, data: bytes = b"") -> bytes:
    return message(b"R", struct.pack("!I", kind) + data)


AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12


def error_fields(body: bytes) -> dict[str, str]:
    """The fields of an ErrorResponse / NoticeResponse body, by their one-letter code."""
    out: dict[str, str] = {}
    i = 0
    while i < len(body) and body[i] != 0:
        end = body.find(b"\0", i + 1)
        if end < 0:
            break
        out[chr(body[i])] = body[i + 1 : end].decode("utf-8", "replace")
        i = end + 1
    return out


def parse_message(body: bytes) -> tuple[str, str]:
    """Parse ('P'): (statement name, query text); the parameter types are the server's business."""
    name, i = cstring(body)
    query, _ = cstring(body, i)
    return name, query


def bind_names(body: bytes) -> tuple[str, str]:
    """Bind ('B'): (portal, statement)."""
    portal, i = cstring(body)
    statement, _ = cstring(body, i)
    return portal, statement


def target(body: bytes) -> tuple[str, str]:
    """Describe / Close ('D' / 'C'): (kind 'S' or 'P', name)."""
    if not body:
        raise WireError("describe/close without a target")
    name, _ = cstring(body, 1)
    return chr(body[0]), name
