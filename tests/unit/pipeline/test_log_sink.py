"""The worker's log sink: what it sends itself and what it leaves for the attempt's report."""

from __future__ import annotations

import asyncio

from services.pipeline.worker.log_sink import BATCH_LINES, LogSink
from services.pipeline.worker.masking import Masker


class _Store:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    async def send(self, lines: list[str]) -> str:
        self.batches.append(lines)
        return "ok"


async def test_a_drained_sink_leaves_its_last_batch_for_the_report_and_sends_nothing_itself() -> None:
    store = _Store()
    sink = LogSink(store.send, Masker([]), 1 << 20)
    sink.start()
    sink.line("== step 1")
    await sink.output(b"done\npartial")
    await asyncio.sleep(0)  # the flusher is waiting for its interval or a full batch
    tail = await sink.drain()
    assert tail == ["== step 1", "done", "partial"]
    assert store.batches == []


async def test_a_drained_sink_sends_all_but_its_last_batch() -> None:
    store = _Store()
    sink = LogSink(store.send, Masker([]), 1 << 30)
    lines = [f"line {i}" for i in range(BATCH_LINES + 3)]
    for line in lines:
        sink.line(line)
    tail = await sink.drain()
    assert store.batches == [lines[:BATCH_LINES]]
    assert tail == lines[BATCH_LINES:]


async def test_a_closed_sink_sends_every_line() -> None:
    store = _Store()
    sink = LogSink(store.send, Masker([]), 1 << 20)
    sink.start()
    sink.line("== step 1")
    await sink.close()
    assert store.batches == [["== step 1"]]
