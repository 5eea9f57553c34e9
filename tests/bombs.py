"""Decompression bombs built a piece at a time, and the traced memory peak of one call.

Shared by the decoding, leak_guard, scope_guard and upstream-fault tests.
"""

from __future__ import annotations

import tracemalloc
import zlib
from collections.abc import Callable

import brotli
import zstandard

MB = 1024 * 1024


def bomb(enc: str, size: int) -> bytes:
    """`size` zero bytes compressed per `enc`, a piece at a time, so building it costs no `size` of memory."""
    piece = b"\0" * MB
    if enc in ("gzip", "deflate"):
        z = zlib.compressobj(9, zlib.DEFLATED, 31 if enc == "gzip" else 15)
        return b"".join(z.compress(piece) for _ in range(size // len(piece))) + z.flush()
    if enc == "br":
        b = brotli.Compressor()
        return b"".join(b.process(piece) for _ in range(size // len(piece))) + b.finish()
    c = zstandard.ZstdCompressor().compressobj()
    return b"".join(c.compress(piece) for _ in range(size // len(piece))) + c.flush()


def traced_peak[T](call: Callable[[], T]) -> tuple[T, int]:
    """`call()`'s result and the most Python memory it held at once (tracemalloc), in bytes."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
