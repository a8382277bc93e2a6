"""A log is read in bounded pieces: the event loop keeps turning, kept lines stay short."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import cast

from services.debugger.domain import SLICE, Debugger, LogAnalysis, LogOptions
from services.debugger.log_reader import KEPT_CHARS, TAIL_CHARS, LogReader
from services.debugger.template_miner import TemplateMiner


def analysis_of(reader: LogReader) -> LogAnalysis:
    """An analysis that is only fed (finishing it would need a Debugger)."""
    return LogAnalysis(cast(Debugger, None), cast(LogOptions, None), reader, 1 << 30)


async def line_counts_seen_by_another_task(reader: LogReader, reading: Awaitable[None]) -> list[int]:
    """The line counts a task running beside `reading` sees, one per turn of the event loop."""
    seen: list[int] = []

    async def watch() -> None:
        while True:
            seen.append(reader.line_count)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    await reading
    watcher.cancel()
    return seen


async def test_a_big_chunk_is_read_a_slice_at_a_time_while_other_calls_run() -> None:
    reader = LogReader(TemplateMiner())
    line = b"step 7 of the build\n"
    lines = 4 * SLICE // len(line)
    seen = await line_counts_seen_by_another_task(reader, analysis_of(reader).feed(line * lines))
    assert reader.line_count == lines
    assert any(0 < count < lines for count in seen)


async def test_text_sent_whole_is_read_a_slice_at_a_time_too() -> None:
    reader = LogReader(TemplateMiner())
    text = "error: step failed\n" * (3 * SLICE // 19)
    seen = await line_counts_seen_by_another_task(reader, analysis_of(reader).feed_text(text))
    assert any(0 < count < reader.line_count for count in seen)


def test_a_kept_line_keeps_only_what_an_excerpt_shows() -> None:
    reader = LogReader(TemplateMiner())
    reader.feed_text("error: " + "x" * 10_000 + "\n")
    [kept] = reader.finish().lines
    assert kept.text.startswith("error: ") and len(kept.text) == KEPT_CHARS


def test_a_log_of_long_lines_keeps_a_tail_bounded_by_its_text_and_the_best_lines_before_it() -> None:
    reader = LogReader(TemplateMiner())
    reader.feed_text("error: the build failed at step 1\n")
    for step in range(2 * TAIL_CHARS // KEPT_CHARS):
        reader.feed_text(f"step {step} " + "x" * KEPT_CHARS + "\n")
    read = reader.finish()
    tail = [line for line in read.lines if line.number > 1]
    assert sum(len(line.text) for line in tail) <= TAIL_CHARS < 2 * sum(len(line.text) for line in tail)
    assert read.lines[0].number == 1  # the failure that fell out of the tail is among the best earlier
