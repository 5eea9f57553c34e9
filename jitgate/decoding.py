"""How big a compressed body is once decoded, found without ever holding it decoded.

A decompression bomb (200 MB of zeros is 200 kB of gzip) costs its decoded size in memory the
moment anything calls mitmproxy's `get_content()`. `decoded_size` (and `decoded_size_exceeds`) decode
a piece at a time, keep nothing and stop as soon as the limit is passed, so checking a bomb costs one piece.
"""

from __future__ import annotations

import zlib

import brotli

_PIECE = 256 * 1024
# Decoded-size bound where no other is configured (the inspection limit's default).
DEFAULT_DECODED_LIMIT = 16 * 1024 * 1024


def decoded_size_exceeds(raw: bytes, encoding: str, limit: int) -> bool:
    """True when `raw` decoded per the Content-Encoding `encoding` is longer than `limit` bytes.

    Raises ValueError for an encoding it does not know or data that does not decode.
    """
    return decoded_size(raw, encoding, limit) > limit


def bomb_check(raw: bytes, encoding: str, limit: int) -> bool | None:
    """The one decompression-bomb check of a body before anything decodes it: True when `raw` decodes
    past `limit`, False when it does not (or has no body or no encoding), None when it does not decode."""
    if not raw or not encoding:
        return False
    try:
        return decoded_size_exceeds(raw, encoding, limit)
    except ValueError:
        return None


def decoded_size(raw: bytes, encoding: str, limit: int) -> int:
    """How long `raw` is once decoded per the Content-Encoding `encoding`, counted a piece at a time.

    Exact up to `limit`; past it counting stops, so an answer above `limit` only says "longer than
    `limit`" (a bomb costs one piece, never its decoded size). Raises ValueError for an encoding it
    does not know or data that does not decode.
    """
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return len(raw)
    if enc in ("gzip", "x-gzip"):
        return _zlib_size(raw, 31, limit, members=True)
    if enc == "deflate":
        try:
            return _zlib_size(raw, 15, limit, members=False)
        except ValueError:
            return _zlib_size(raw, -15, limit, members=False)  # raw deflate, as some clients send it
    if enc == "br":
        return _brotli_size(raw, limit)
    if enc == "zstd":
        return _zstd_size(raw, limit)
    raise ValueError(f"unsupported content encoding {enc!r}")


def _zlib_size(raw: bytes, wbits: int, limit: int, *, members: bool) -> int:
    total = 0
    data = raw
    try:
        while data:
            d = zlib.decompressobj(wbits)
            while True:
                out = d.decompress(data, _PIECE)
                total += len(out)
                if total > limit:
                    return total
                data = d.unconsumed_tail
                if not data and len(out) < _PIECE:
                    break
            if not d.eof:
                raise ValueError("truncated compressed body")
            data = d.unused_data if members else b""  # gzip may hold several members back to back
    except zlib.error:
        raise ValueError("corrupt compressed body") from None
    return total


def _brotli_size(raw: bytes, limit: int) -> int:
    d = brotli.Decompressor()
    total = 0
    try:
        out = d.process(raw, output_buffer_limit=_PIECE)
        while True:
            total += len(out)
            if total > limit:
                return total
            if d.is_finished() or (d.can_accept_more_data() and not out):
                break
            out = d.process(b"", output_buffer_limit=_PIECE)
    except brotli.error:
        raise ValueError("corrupt compressed body") from None
    if not d.is_finished():
        raise ValueError("truncated compressed body")
    return total


def _zstd_size(raw: bytes, limit: int) -> int:
    import io

    import zstandard

    total = 0
    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw), read_across_frames=True) as reader:
            while piece := reader.read(_PIECE):
                total += len(piece)
                if total > limit:
                    return total
    except zstandard.ZstdError:
        raise ValueError("corrupt compressed body") from None
    return total


class _Exceeded(Exception):
    """Raised inside the decoder (also from zstandard's sink) once the bound is passed."""


class _Sink:
    """Where zstandard's stream writer puts decoded pieces; stops it once the bound is passed."""

    def __init__(self, owner: BoundedDecoder) -> None:
        self._owner = owner
        self.pieces: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._owner._count(len(data))
        self.pieces.append(bytes(data))
        return len(data)


class BoundedDecoder:
    """Decode a streamed body's content encoding a chunk at a time, never past `limit` decoded bytes.

    `feed(chunk)` returns the decoded bytes of `chunk`, produced a piece at a time; once the total
    would pass `limit` it stops decoding, sets `exceeded` and returns b"" from then on, so a bomb
    costs at most `limit` plus one piece however far it would expand. Corrupt data raises ValueError.
    """

    def __init__(self, encoding: str, limit: int) -> None:
        self.encoding = encoding.strip().lower()
        self.limit = limit
        self.total = 0
        self.exceeded = False
        self._z: zlib._Decompress | None = None
        self._wbits = 0
        self._br: brotli.Decompressor | None = None
        self._zstd: object | None = None
        self._sink: _Sink | None = None
        if self.encoding in ("gzip", "x-gzip"):
            self._wbits = 47  # gzip or zlib header, as mitmproxy accepts
        elif self.encoding == "deflate":
            self._wbits = 15
        elif self.encoding == "br":
            self._br = brotli.Decompressor()
        elif self.encoding == "zstd":
            import zstandard

            self._sink = _Sink(self)
            self._zstd = zstandard.ZstdDecompressor().stream_writer(self._sink, write_size=_PIECE)  # type: ignore[arg-type]
        else:
            raise ValueError(f"unsupported content encoding {self.encoding!r}")
        if self._wbits:
            self._z = zlib.decompressobj(self._wbits)

    def feed(self, data: bytes) -> bytes:
        if self.exceeded or not data:
            return b""
        pieces: list[bytes] = []
        try:
            if self._z is not None:
                self._zlib(data, pieces)
            elif self._br is not None:
                self._brotli(data, pieces)
            else:
                self._zstandard(data, pieces)
        except _Exceeded:
            self.exceeded = True
            return b""
        return b"".join(pieces)

    def _count(self, n: int) -> None:
        self.total += n
        if self.total > self.limit:
            raise _Exceeded

    def _zlib(self, data: bytes, pieces: list[bytes]) -> None:
        try:
            self._zlib_pieces(data, pieces)
        except zlib.error:
            if not (self.encoding == "deflate" and self._wbits == 15 and self.total == 0):
                raise ValueError("corrupt compressed body") from None
            self._wbits = -15  # raw deflate, as some servers send it
            self._z = zlib.decompressobj(self._wbits)
            pieces.clear()
            try:
                self._zlib_pieces(data, pieces)
            except zlib.error:
                raise ValueError("corrupt compressed body") from None

    def _zlib_pieces(self, data: bytes, pieces: list[bytes]) -> None:
        assert self._z is not None
        pending = True
        while pending:
            if self._z.eof:  # a further gzip member (trailing bytes that are none fail to decode)
                self._z = zlib.decompressobj(self._wbits)
            out = self._z.decompress(data, _PIECE)
            self._count(len(out))
            pieces.append(out)
            data = self._z.unused_data if self._z.eof else self._z.unconsumed_tail
            # More to do: input left, or a full piece that may leave output held inside zlib.
            pending = bool(data) or (len(out) == _PIECE and not self._z.eof)

    def _brotli(self, data: bytes, pieces: list[bytes]) -> None:
        assert self._br is not None
        try:
            out = self._br.process(data, output_buffer_limit=_PIECE)
            while True:
                self._count(len(out))
                pieces.append(out)
                if self._br.is_finished() or self._br.can_accept_more_data():
                    return
                out = self._br.process(b"", output_buffer_limit=_PIECE)
        except brotli.error:
            raise ValueError("corrupt compressed body") from None

    def _zstandard(self, data: bytes, pieces: list[bytes]) -> None:
        import zstandard

        assert self._sink is not None and self._zstd is not None
        self._sink.pieces = pieces
        try:
            self._zstd.write(data)  # type: ignore[attr-defined]
        except zstandard.ZstdError:
            raise ValueError("corrupt compressed body") from None
