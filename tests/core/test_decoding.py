"""decoded_size_exceeds: exact at the limit for every encoding mitmproxy decodes, bounded on bombs."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

import brotli
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from jitgate.decoding import decoded_size_exceeds

ENCODERS = {
    "identity": lambda b: b,
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
}


@pytest.mark.parametrize("enc", sorted(ENCODERS))
@settings(max_examples=30, deadline=None)
@given(body=st.binary(max_size=3000), delta=st.integers(min_value=-2, max_value=2))
def test_exact_at_the_limit(enc: str, body: bytes, delta: int) -> None:
    limit = max(0, len(body) + delta)
    assert decoded_size_exceeds(ENCODERS[enc](body), enc, limit) is (len(body) > limit)


def test_raw_deflate_and_gzip_members() -> None:
    raw = zlib.compressobj(wbits=-15)
    packed = raw.compress(b"a" * 5000) + raw.flush()
    assert decoded_size_exceeds(packed, "deflate", 4999) and not decoded_size_exceeds(packed, "deflate", 5000)
    two = gzip.compress(b"x" * 10) + gzip.compress(b"y" * 5000)  # a bomb may hide in a later member
    assert decoded_size_exceeds(two, "gzip", 5009) and not decoded_size_exceeds(two, "gzip", 5010)


def _bomb(enc: str, size: int) -> bytes:
    """`size` zero bytes compressed a piece at a time, so building it costs no `size` of memory."""
    piece = b"\0" * (1024 * 1024)
    if enc in ("gzip", "deflate"):
        z = zlib.compressobj(9, zlib.DEFLATED, 31 if enc == "gzip" else 15)
        return b"".join(z.compress(piece) for _ in range(size // len(piece))) + z.flush()
    if enc == "br":
        b = brotli.Compressor()
        return b"".join(b.process(piece) for _ in range(size // len(piece))) + b.finish()
    c = zstandard.ZstdCompressor().compressobj()
    return b"".join(c.compress(piece) for _ in range(size // len(piece))) + c.flush()


@pytest.mark.parametrize("enc", ["gzip", "deflate", "br", "zstd"])
def test_bomb_is_found_without_decoding_it(enc: str) -> None:
    bomb = _bomb(enc, 300 * 1024 * 1024)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        assert decoded_size_exceeds(bomb, enc, 16 * 1024 * 1024)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024  # pieces only: the 300 MB it decodes to never exist at once


@pytest.mark.parametrize(("enc", "data"), [("gzip", b"not gzip"), ("br", b"\xff\xff\xff"), ("compress", b"x")])
def test_corrupt_or_unknown_raises_value_error(enc: str, data: bytes) -> None:
    with pytest.raises(ValueError):
        decoded_size_exceeds(data, enc, 10)


def test_truncated_gzip_raises() -> None:
    with pytest.raises(ValueError):
        decoded_size_exceeds(gzip.compress(b"a" * 1000)[:-12], "gzip", 10_000)
