"""A stand-in for "inspection and recording in a worker process", for `chain_costs.py --chains offload`.

Not a gateway addon: it checks nothing and records nothing. It answers one question. Would the
gateway get faster if leak_guard's scans and the session record ran in a child process, with the
event loop only handing over the bodies and awaiting the answer?

Its `request` and `response` hooks send the body (length-prefixed, with a sequence number) over
a socketpair to a child process. The child spends about what leak_guard and the recorder spend
and answers:
- request: `json.loads` of the body, SHA-256 of each document, then busy CPU up to
  `OFFLOAD_REQUEST_MS` (default 0.3 ms);
- response: busy CPU up to `OFFLOAD_RESPONSE_MS` (default 0.6 ms).
The hooks await that answer. docs/performance.md ("fourth pass") has the measurement: the
offload came out slower than doing the work on the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import struct
import subprocess
import sys
from typing import Any

_HEAD = struct.Struct("!IIB")  # body length, sequence number, kind (0 request, 1 response)
_ANSWER = struct.Struct("!I")  # sequence number

_CHILD = r"""
import hashlib, json, socket, struct, sys, time

sock = socket.socket(fileno=int(sys.argv[1]))
busy = (float(sys.argv[2]) / 1000, float(sys.argv[3]) / 1000)
head, answer = struct.Struct("!IIB"), struct.Struct("!I")
pending = b""


def take(n):
    global pending
    while len(pending) < n:
        chunk = sock.recv(1 << 20)
        if not chunk:
            sys.exit(0)
        pending += chunk
    out, pending = pending[:n], pending[n:]
    return out


while True:
    size, seq, kind = head.unpack(take(head.size))
    body = take(size)
    t0 = time.process_time()
    if kind == 0:
        try:
            for doc in json.loads(body).get("documents", []):
                hashlib.sha256(doc.encode()).digest()
        except (ValueError, AttributeError):
            pass
    while time.process_time() - t0 < busy[kind]:
        pass
    sock.sendall(answer.pack(seq))
"""


class OffloadStandIn:
    def __init__(self) -> None:
        self._seq = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._child: subprocess.Popen[bytes] | None = None

    async def running(self) -> None:
        ours, theirs = socket.socketpair()
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 21)
        argv = [
            sys.executable, "-c", _CHILD, str(theirs.fileno()),
            os.environ.get("OFFLOAD_REQUEST_MS", "0.3"), os.environ.get("OFFLOAD_RESPONSE_MS", "0.6"),
        ]
        self._child = subprocess.Popen(argv, pass_fds=[theirs.fileno()])
        theirs.close()
        reader, self._writer = await asyncio.open_unix_connection(sock=ours)
        self._reader_task = asyncio.get_running_loop().create_task(self._answers(reader))

    def done(self) -> None:
        if self._child is not None:
            self._child.kill()
            self._child.wait()

    async def _answers(self, reader: asyncio.StreamReader) -> None:
        while True:
            (seq,) = _ANSWER.unpack(await reader.readexactly(_ANSWER.size))
            waiter = self._waiting.pop(seq, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def _call(self, kind: int, body: bytes) -> None:
        assert self._writer is not None
        seq = next(self._seq)
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[seq] = waiter
        self._writer.write(_HEAD.pack(len(body), seq, kind))
        self._writer.write(body)
        await waiter

    async def request(self, flow: Any) -> None:
        await self._call(0, flow.request.raw_content or b"")

    async def response(self, flow: Any) -> None:
        if flow.response is not None:
            await self._call(1, flow.response.raw_content or b"")
