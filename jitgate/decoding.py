"""How big a compressed body is once decoded, found without ever holding it decoded.

A decompression bomb (200 MB of zeros is 200 kB of gzip) costs its decoded size in memory the
moment anything calls mitmproxy's `get_content()`. `decoded_size_exceeds` decodes a piece at a
time, keeps nothing and stops as soon as the limit is passed, so checking a bomb costs one piece.
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
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return len(raw) > limit
    if enc in ("gzip", "x-gzip"):
        return _zlib_exceeds(raw, 31, limit, members=True)
    if enc == "deflate":
        try:
            return _zlib_exceeds(raw, 15, limit, members=False)
        except ValueError:
            return _zlib_exceeds(raw, -15, limit, members=False)  # raw deflate, as some clients send it
    if enc == "br":
        return _brotli_exceeds(raw, limit)
    if enc == "zstd":
        return _zstd_exceeds(raw, limit)
    raise ValueError(f"unsupported content encoding {enc!r}")


def _zlib_exceeds(raw: bytes, wbits: int, limit: int, *, members: bool) -> bool:
    total = 0
    data = raw
    try:
        while data:
            d = zlib.decompressobj(wbits)
            while True:
                out = d.decompress(data, _PIECE)
                total += len(out)
                if total > limit:
                    return True
                data = d.unconsumed_tail
                if not data and len(out) < _PIECE:
                    break
            if not d.eof:
                raise ValueError("truncated compressed body")
            data = d.unused_data if members else b""  # gzip may hold several members back to back
    except zlib.error:
        raise ValueError("corrupt compressed body") from None
    return False


def _brotli_exceeds(raw: bytes, limit: int) -> bool:
    d = brotli.Decompressor()
    total = 0
    try:
        out = d.process(raw, output_buffer_limit=_PIECE)
        while True:
            total += len(out)
            if total > limit:
                return True
            if d.is_finished() or (d.can_accept_more_data() and not out):
                break
            out = d.process(b"", output_buffer_limit=_PIECE)
    except brotli.error:
        raise ValueError("corrupt compressed body") from None
    if not d.is_finished():
        raise ValueError("truncated compressed body")
    return False


def _zstd_exceeds(raw: bytes, limit: int) -> bool:
    import io

    import zstandard

    total = 0
    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw), read_across_frames=True) as reader:
            while piece := reader.read(_PIECE):
                total += len(piece)
                if total > limit:
                    return True
    except zstandard.ZstdError:
        raise ValueError("corrupt compressed body") from None
    return False
