"""When to write what callers have queued: at once after a quiet spell, else once per window.

Under load a service calls write() about once per RPC, and each write is a system call that
also hands the GIL to grpc's poller thread and back. `WriteWindow` turns those into one write
per window: the first thing queued after a quiet spell is written at the end of the current
loop turn (with whatever else that turn queues), and anything queued less than `seconds`
after a write waits for the end of that window. An idle process adds no delay; a busy one
writes once per window. The hot-path Redis connection and the per-RPC log line use it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable


class WriteWindow:
    def __init__(self, seconds: float, write: Callable[[], None]) -> None:
        self._seconds = seconds
        self._write = write
        self._due: asyncio.Handle | None = None
        self._due_on: asyncio.AbstractEventLoop | None = None  # the loop `_due` runs on
        self._last = -math.inf  # loop time of the last write

    def queued(self, loop: asyncio.AbstractEventLoop) -> None:
        """Something was queued: make sure a write is due."""
        if self._due is not None and self._due_on is loop:
            return  # (a handle on another loop died with it: asyncio.run was called again)
        window_ends = self._last + self._seconds
        if loop.time() >= window_ends:
            self._due = loop.call_soon(self._run, loop)
        else:
            self._due = loop.call_at(window_ends, self._run, loop)
        self._due_on = loop

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        self._due = None
        self._last = loop.time()
        self._write()

    def cancel(self) -> None:
        """Drop the due write (what was queued is being thrown away)."""
        if self._due is not None:
            self._due.cancel()
            self._due = None
