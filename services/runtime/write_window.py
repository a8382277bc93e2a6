"""When to write what callers have queued: at once after a quiet spell, else once per window.

Under load a service calls write() about once per RPC, and each write is a system call that
also hands the GIL to grpc's poller thread and back. `WriteWindow` turns those into one write
per window: the first thing queued after a quiet spell is written at the end of the current
loop turn (with whatever else that turn queues), and anything queued less than `seconds`
after a write waits for the end of that window. An idle process adds no delay; a busy one
writes once per window. The per-RPC log line uses it so.

With `adaptive`, for writes that callers wait on (the hot-path Redis connection), the window
also ends as soon as as many things are queued as the largest of the last `RECENT` writes
carried: group commit that follows the load, like MySQL's
binlog_group_commit_sync_no_delay_count. A caller alone never waits, since each of its writes
carries one command. Under load the writes carry what arrives together, and the next write
leaves once as much has arrived again, or at the end of the window.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable

RECENT = 4  # writes whose sizes the adaptive window follows


class WriteWindow:
    def __init__(self, seconds: float, write: Callable[[], None], *, adaptive: bool = False) -> None:
        self._seconds = seconds
        self._write = write
        self._adaptive = adaptive
        self._due: asyncio.Handle | None = None
        self._due_on: asyncio.AbstractEventLoop | None = None  # the loop `_due` runs on
        self._due_now = False  # `_due` runs at the end of the current loop turn
        self._last = -math.inf  # loop time of the last write
        self._queued = 0  # things queued since the last write
        self._recent: deque[int] = deque([1], maxlen=RECENT)  # what each of the last writes carried
        self._enough = 1  # adaptive: this many queued end the window

    def queued(self, loop: asyncio.AbstractEventLoop) -> None:
        """Something was queued: make sure a write is due."""
        self._queued += 1
        if self._due is not None and self._due_on is not loop:
            self._due = None  # a handle on another loop died with it: asyncio.run was called again
        if self._due is not None and self._due_now:
            return
        window_ends = self._last + self._seconds
        if loop.time() >= window_ends or (self._adaptive and self._queued >= self._enough):
            if self._due is not None:
                self._due.cancel()
            self._due, self._due_now = loop.call_soon(self._run, loop), True
        elif self._due is None:
            self._due, self._due_now = loop.call_at(window_ends, self._run, loop), False
        self._due_on = loop

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        self._due = None
        self._last = loop.time()
        self._recent.append(self._queued)
        self._enough = max(self._recent)
        self._queued = 0
        self._write()

    def cancel(self) -> None:
        """Drop the due write (what was queued is being thrown away)."""
        self._queued = 0
        if self._due is not None:
            self._due.cancel()
            self._due = None
