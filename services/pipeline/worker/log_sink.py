"""An attempt's output on its way to Redis: split into lines, masked, sent in batches, cut at
the cap. Memory stays bounded: past the cap, output is read and dropped without splitting,
and a slow Redis makes the reader wait rather than the buffer grow."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable

from services.pipeline.worker.masking import Masker

MAX_LINE = 16 * 1024  # a longer line goes out in pieces
BATCH_LINES = 4000  # Lua's unpack takes at most ~8,000 values
BATCH_BYTES = 512 * 1024
MAX_PENDING_BYTES = 4 * 1024 * 1024
FLUSH_INTERVAL_S = 0.05
MARKER = "[devmesh: log truncated at {cap} bytes; the rest of the output was dropped]"

Send = Callable[[list[str]], Awaitable[str]]  # -> "ok", "truncated" or "stale"


class LogSink:
    def __init__(self, send: Send, masker: Masker, cap_bytes: int) -> None:
        self.send = send
        self.masker = masker
        self.cap = cap_bytes
        self.partial = b""
        self.pending: list[str] = []
        self.pending_bytes = 0
        self.accepted_bytes = 0
        self.truncated = False
        self.stale = False
        self.room = asyncio.Event()
        self.room.set()
        self.wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        self.recent: deque[str] = deque(maxlen=20)  # the last lines, for the failure's reason

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_forever())

    def line(self, text: str) -> None:
        """A line of the worker's own (a step's header, a checkout's error)."""
        self._add(text)

    def _add(self, text: str) -> None:
        self._add_lines([text])

    def _add_lines(self, lines: list[str]) -> None:
        if self.truncated or self.stale:
            return
        if self.masker.forms:
            lines = [self.masker(line) for line in lines]
        # Characters, not bytes: the store cuts at the cap in bytes exactly; this only stops
        # the work here soon after.
        size = sum(map(len, lines)) + len(lines)
        self.pending.extend(lines)
        self.recent.extend(lines[-20:])
        self.pending_bytes += size
        self.accepted_bytes += size
        if self.accepted_bytes > self.cap:
            self.truncated = True  # the store adds the marker
        if len(self.pending) >= BATCH_LINES or self.pending_bytes >= BATCH_BYTES:
            self.wake.set()
        if self.pending_bytes >= MAX_PENDING_BYTES:
            self.room.clear()

    async def output(self, chunk: bytes) -> None:
        """A chunk of a step's output."""
        if self.truncated or self.stale:
            return
        data = self.partial + chunk
        end = data.rfind(b"\n")
        if end < 0:
            self.partial = data
            if len(data) > MAX_LINE:
                self._add_lines(_pieces(data.decode(errors="replace")))
                self.partial = b""
        else:
            self.partial = data[end + 1 :]
            lines = data[:end].decode(errors="replace").split("\n")
            if any(len(line) > MAX_LINE for line in lines):
                lines = [piece for line in lines for piece in _pieces(line)]
            self._add_lines(lines)
        await self.room.wait()

    def end_of_step(self) -> None:
        if self.partial:
            self._add(self.partial.decode(errors="replace"))
            self.partial = b""

    async def _flush(self, keep: int = 0) -> None:
        """Send the pending lines, all but the last `keep` batches' worth."""
        while len(self.pending) > keep:
            batch = self.pending[:BATCH_LINES]
            del self.pending[:BATCH_LINES]
            self.pending_bytes = max(0, self.pending_bytes - sum(map(len, batch)) - len(batch))
            if self.pending_bytes < MAX_PENDING_BYTES:
                self.room.set()
            self.sent(await self.send(batch))
        self.room.set()

    def sent(self, result: str) -> None:
        """What the store answered to a batch: past the cap, or the attempt fenced off."""
        if result == "truncated":
            self.truncated = True
            self.pending.clear()
        elif result == "stale":
            self.stale = True
            self.pending.clear()

    async def _flush_forever(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), FLUSH_INTERVAL_S)
            self.wake.clear()
            if self._closing:
                break  # the closer sends the rest (`drain`: its last batch with the report)
            await self._flush()

    async def close(self) -> None:
        """Send what is left; stop."""
        tail = await self.drain()
        if tail:
            self.sent(await self.send(tail))

    async def drain(self) -> list[str]:
        """Stop; send what is left but the last batch, and return that batch: the worker sends
        it in the same round trip as the attempt's end (a `true` step's one header line
        costs no round trip of its own). Its reply goes to `sent`."""
        self._closing = True  # the flusher ends after its current batch: none is lost mid-send
        self.wake.set()
        if self._flusher is not None:
            await self._flusher
        self.end_of_step()
        await self._flush(keep=BATCH_LINES)
        tail, self.pending, self.pending_bytes = self.pending, [], 0
        self.room.set()
        return tail


def _pieces(line: str) -> list[str]:
    """A line longer than MAX_LINE, in pieces of at most MAX_LINE."""
    return [line[i : i + MAX_LINE] for i in range(0, max(1, len(line)), MAX_LINE)] if line else [line]
