"""jitgate.pgwire.MessageReader over a real asyncio StreamReader: messages cut anywhere by the
stream come out whole and in order, a burst one read brought comes out together, a bad length
is refused from its header alone."""

from __future__ import annotations

import asyncio
import random
import struct

import pytest

from jitgate import pgwire
from jitgate.pgwire import Message, MessageReader, WireError


def _messages(rng: random.Random, n: int) -> list[Message]:
    sizes = [0, 1, 7, 300, 5000]
    return [Message(rng.choice([b"D", b"T", b"C", b"Z"]), rng.randbytes(rng.choice(sizes))) for _ in range(n)]


async def _read_all(data: bytes, cuts: list[int], chunk: int) -> list[Message]:
    stream = asyncio.StreamReader()
    reader = MessageReader(stream.read, chunk=chunk)
    got: list[Message] = []

    async def feed() -> None:
        last = 0
        for cut in [*cuts, len(data)]:
            stream.feed_data(data[last:cut])
            last = cut
            await asyncio.sleep(0)
        stream.feed_eof()

    feeder = asyncio.create_task(feed())
    with pytest.raises(asyncio.IncompleteReadError):
        while True:
            got.extend(await reader.batch())
    await feeder
    return got


@pytest.mark.parametrize("seed", range(20))
def test_messages_cut_anywhere_come_out_whole_and_in_order(seed: int) -> None:
    rng = random.Random(seed)
    sent = _messages(rng, 40)
    data = b"".join(m.raw() for m in sent)
    cuts = sorted(rng.sample(range(1, len(data)), 25))
    assert asyncio.run(_read_all(data, cuts, chunk=rng.choice([5, 64, 4096]))) == sent


def test_one_read_brings_a_burst_out_together() -> None:
    async def go() -> tuple[list[Message], list[Message]]:
        stream = asyncio.StreamReader()
        rows = [Message(b"D", b"row %d" % i) for i in range(50)]
        stream.feed_data(b"".join(m.raw() for m in rows) + pgwire.message(b"C", b"SELECT 50\0")[:3])
        reader = MessageReader(stream.read)
        first = await reader.batch()
        stream.feed_data(pgwire.message(b"C", b"SELECT 50\0")[3:])
        return first, await reader.batch()

    first, second = asyncio.run(go())
    assert len(first) == 50 and all(m.type == b"D" for m in first)
    assert second == [Message(b"C", b"SELECT 50\0")]


def test_a_bad_length_is_refused_before_its_body_arrives() -> None:
    async def go(head: bytes) -> None:
        stream = asyncio.StreamReader()
        stream.feed_data(head)  # no body follows, and no end: only the header can refuse it
        await MessageReader(stream.read, limit=1024).batch()

    with pytest.raises(WireError):
        asyncio.run(go(b"D" + struct.pack("!I", 1024 + 5)))
    with pytest.raises(WireError):
        asyncio.run(go(b"D" + struct.pack("!I", 3)))
