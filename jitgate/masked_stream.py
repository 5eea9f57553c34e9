"""A streamed answer masked as it passes: decoded a piece at a time, bounded, masked with an
overlap window (jitgate.inspect.StreamMasker), never more decoded than the inspection limit.

`MaskStream` is the callable a proxy hands each chunk to (mitmproxy's `flow.response.stream`);
it is protocol-neutral: bytes in, masked bytes out, and `failed` says why it cut a body.
"""

from __future__ import annotations

from collections.abc import Callable

from jitgate import jsontext
from jitgate.decoding import BoundedDecoder
from jitgate.errors import JitgateError, UpstreamResponseInvalid, UpstreamResponseNotUtf8, UpstreamResponseTooLarge
from jitgate.inspect import StreamMasker
from jitgate.inspect.stream import HoldLimitExceeded


def decompressor(encoding: str, limit: int) -> Callable[[bytes], bytes] | None:
    """An incremental decoder for a streamed body's content encoding, bounded at `limit` decoded
    bytes (`BoundedDecoder`); None for an encoding it does not know. Identity is not decoded, so
    it is not bounded either: it costs no more memory than it brings."""
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return lambda data: data
    try:
        decoder = BoundedDecoder(enc, limit)
    except ValueError:
        return None

    def decode(data: bytes) -> bytes:
        out = decoder.feed(data)
        if decoder.exceeded:
            raise _TooLarge
        return out

    return decode


class _TooLarge(Exception):
    """A streamed body decoded past the inspection limit."""


class MaskStream:
    """The `flow.response.stream` callable: decode, mask with an overlap window, pass on.

    What went out is kept (masked, up to `keep` bytes) so the session record can hold it. A body
    that decodes past the inspection limit, or does not decode, is cut: nothing more is decoded or
    passed on, `failed` holds why and `on_fail` is told once (leak_guard closes the upstream).
    """

    def __init__(
        self,
        masker: StreamMasker,
        decode: Callable[[bytes], bytes],
        keep: int,
        on_fail: Callable[[JitgateError], None] = lambda error: None,
    ) -> None:
        self.masker = masker
        self._decode = decode
        self._keep = keep
        self._on_fail = on_fail
        self.sent = bytearray()
        self.complete = True
        self.failed: JitgateError | None = None
        self._utf8 = jsontext.Utf8Stream()

    def __call__(self, data: bytes) -> list[bytes]:
        if self.failed is not None:
            return []  # cut: the rest is dropped undecoded
        try:
            decoded = self._decode(data) if data else b""
        except _TooLarge:
            return self._fail(UpstreamResponseTooLarge("the upstream response exceeds the gateway's inspection limit"))
        except ValueError:
            return self._fail(UpstreamResponseInvalid("the upstream response cannot be decoded for inspection"))
        try:
            self._utf8.feed(decoded, final=not data)
        except ValueError:
            return self._fail(UpstreamResponseNotUtf8("the upstream response is not UTF-8, so it cannot be masked"))
        try:
            out = self.masker.feed(decoded) if data else self.masker.close()
        except HoldLimitExceeded:
            return self._fail(UpstreamResponseTooLarge("the upstream response exceeds the gateway's inspection limit"))
        if self.complete and len(self.sent) + len(out) <= self._keep:
            self.sent += out
        else:
            self.complete = False
            self.sent.clear()
        # Never an empty chunk: HTTP/1 chunked framing would read it as the end of the body.
        return [out] if out else []

    def _fail(self, error: JitgateError) -> list[bytes]:
        self.failed = error
        self.complete = False
        self.sent.clear()
        self._on_fail(error)
        return []
