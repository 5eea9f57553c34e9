"""decoded_size_exceeds and BoundedDecoder: exact at the limit for every encoding mitmproxy decodes,
whole or fed in arbitrary chunks, and bounded on bombs."""

from __future__ import annotations

import gzip
import itertools
import zlib

import brotli
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from jitgate.decoding import BoundedDecoder, bomb_check, decoded_size, decoded_size_exceeds
from tests.bombs import bomb, traced_peak

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


@pytest.mark.parametrize("enc", sorted(ENCODERS))
@settings(max_examples=30, deadline=None)
@given(body=st.binary(max_size=3000), delta=st.integers(min_value=-2, max_value=2))
def test_decoded_size_is_exact_up_to_the_limit(enc: str, body: bytes, delta: int) -> None:
    limit = max(0, len(body) + delta)
    size = decoded_size(ENCODERS[enc](body), enc, limit)
    assert size == len(body) if len(body) <= limit else size > limit


@pytest.mark.parametrize("enc", ["gzip", "deflate", "br", "zstd"])
def test_decoded_size_of_a_bomb_stops_past_the_limit(enc: str) -> None:
    packed = bomb(enc, 300 * 1024 * 1024)
    size, peak = traced_peak(lambda: decoded_size(packed, enc, 16 * 1024 * 1024))
    assert 16 * 1024 * 1024 < size < 300 * 1024 * 1024
    assert peak < 4 * 1024 * 1024


def test_raw_deflate_and_gzip_members() -> None:
    raw = zlib.compressobj(wbits=-15)
    packed = raw.compress(b"a" * 5000) + raw.flush()
    assert decoded_size_exceeds(packed, "deflate", 4999) and not decoded_size_exceeds(packed, "deflate", 5000)
    two = gzip.compress(b"x" * 10) + gzip.compress(b"y" * 5000)  # a bomb may hide in a later member
    assert decoded_size_exceeds(two, "gzip", 5009) and not decoded_size_exceeds(two, "gzip", 5010)


@pytest.mark.parametrize("enc", ["gzip", "deflate", "br", "zstd"])
def test_bomb_is_found_without_decoding_it(enc: str) -> None:
    packed = bomb(enc, 300 * 1024 * 1024)
    over, peak = traced_peak(lambda: decoded_size_exceeds(packed, enc, 16 * 1024 * 1024))
    assert over
    assert peak < 4 * 1024 * 1024  # pieces only: the 300 MB it decodes to never exist at once


@pytest.mark.parametrize(("enc", "data"), [("gzip", b"not gzip"), ("br", b"\xff\xff\xff"), ("compress", b"x")])
def test_corrupt_or_unknown_raises_value_error(enc: str, data: bytes) -> None:
    with pytest.raises(ValueError):
        decoded_size_exceeds(data, enc, 10)


def test_truncated_gzip_raises() -> None:
    with pytest.raises(ValueError):
        decoded_size_exceeds(gzip.compress(b"a" * 1000)[:-12], "gzip", 10_000)


# -- BoundedDecoder: a streamed body, chunk by chunk ---------------------------------------------

ENCODED = ["gzip", "deflate", "br", "zstd"]


def _feed_all(dec: BoundedDecoder, packed: bytes, cuts: list[int]) -> bytes:
    bounds = sorted({min(max(c, 0), len(packed)) for c in cuts} | {0, len(packed)})
    return b"".join(dec.feed(packed[a:b]) for a, b in itertools.pairwise(bounds))


@pytest.mark.parametrize("enc", ENCODED)
@settings(max_examples=30, deadline=None)
@given(
    body=st.binary(max_size=3000) | st.text(max_size=400).map(lambda t: (t * 40).encode()),
    delta=st.integers(min_value=-2, max_value=2),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
)
def test_bounded_decoder_in_any_chunks(enc: str, body: bytes, delta: int, cuts: list[int]) -> None:
    limit = max(0, len(body) + delta)
    dec = BoundedDecoder(enc, limit)
    out = _feed_all(dec, ENCODERS[enc](body), cuts)
    assert dec.exceeded is (len(body) > limit)
    if not dec.exceeded:
        assert out == body and dec.total == len(body)
    else:
        assert len(out) <= limit and dec.feed(b"more") == b""  # nothing past the limit, ever


def test_bounded_decoder_members_and_raw_deflate() -> None:
    two = gzip.compress(b"x" * 10) + gzip.compress(b"y" * 5000)
    assert _feed_all(BoundedDecoder("gzip", 5010), two, [7, 30, 31]) == b"x" * 10 + b"y" * 5000
    raw = zlib.compressobj(wbits=-15)
    packed = raw.compress(b"a" * 5000) + raw.flush()
    assert _feed_all(BoundedDecoder("deflate", 5000), packed, [3]) == b"a" * 5000


@pytest.mark.parametrize("enc", ENCODED)
def test_bounded_decoder_bomb_in_chunks_stays_bounded(enc: str) -> None:
    packed = bomb(enc, 64 * 1024 * 1024)
    limit = 4 * 1024 * 1024
    dec = BoundedDecoder(enc, limit)
    produced, peak = traced_peak(
        lambda: sum(len(dec.feed(packed[i : i + 65536])) for i in range(0, len(packed), 65536))
    )
    assert dec.exceeded and produced <= limit
    assert peak < 2 * limit + 2 * 1024 * 1024  # the limit (and its join), never the 64 MB


@pytest.mark.parametrize(("enc", "data"), [("gzip", b"not gzip at all"), ("br", b"\xff\xff\xff"),
                                           ("zstd", b"\x00" * 20), ("deflate", b"\xff" * 20)])
def test_bounded_decoder_corrupt_raises_value_error(enc: str, data: bytes) -> None:
    with pytest.raises(ValueError):
        BoundedDecoder(enc, 1000).feed(data)


@pytest.mark.parametrize("enc", ["identity", "", "compress", "gzip, br"])
def test_bounded_decoder_only_for_real_encodings(enc: str) -> None:
    with pytest.raises(ValueError):
        BoundedDecoder(enc, 1000)


def test_bomb_check_says_over_under_or_undecodable() -> None:
    body = gzip.compress(b"x" * 10_000)
    assert bomb_check(body, "gzip", 9_999) is True
    assert bomb_check(body, "gzip", 10_000) is False
    assert bomb_check(b"not gzip", "gzip", 10) is None
    assert bomb_check(b"", "gzip", 10) is False and bomb_check(b"x" * 99, "", 10) is False
