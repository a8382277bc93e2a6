"""When a `WriteWindow` writes: the rules of its docstring, on a real event loop."""

from __future__ import annotations

import asyncio

from services.runtime.write_window import RECENT, WriteWindow


class Writes:
    """Counts the writes, and how many things each carried."""

    def __init__(self, seconds: float, *, adaptive: bool) -> None:
        self.sizes: list[int] = []
        self.pending = 0
        self.window = WriteWindow(seconds, self._write, adaptive=adaptive)

    def _write(self) -> None:
        self.sizes.append(self.pending)
        self.pending = 0

    def drop(self) -> None:
        self.pending = 0
        self.window.cancel()

    def queue(self, n: int = 1) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(n):
            self.pending += 1
            self.window.queued(loop)


async def turn() -> None:
    """Let one loop turn pass (and the handles it scheduled run)."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_a_fixed_window_writes_after_a_quiet_spell_at_once_else_when_it_ends() -> None:
    writes = Writes(60.0, adaptive=False)
    writes.queue()
    await turn()
    assert writes.sizes == [1]  # after a quiet spell: at the end of the turn
    writes.queue()
    await turn()
    assert writes.sizes == [1]  # within the window: waits for its end


async def test_an_adaptive_window_follows_the_size_of_recent_writes() -> None:
    writes = Writes(60.0, adaptive=True)
    for n in range(1, 4):
        writes.queue()
        await turn()
        assert writes.sizes == [1] * n  # one thing at a time: each leaves at once
    writes.queue(3)  # three in one turn leave together
    await turn()
    assert writes.sizes == [1, 1, 1, 3]
    writes.queue()
    await turn()
    writes.queue()
    await turn()
    assert writes.sizes == [1, 1, 1, 3]  # two: fewer than the largest recent write carried
    writes.queue()
    await turn()
    assert writes.sizes == [1, 1, 1, 3, 3]  # the third ends the window


class ManualClock(asyncio.SelectorEventLoop):
    """An event loop whose time moves only when a test moves it: a window's end comes when the
    test says, however slowly a loaded machine runs the test."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def time(self) -> float:
        return self.now


def test_an_adaptive_window_ends_when_its_time_is_up_and_forgets_old_sizes() -> None:
    seconds = 0.25
    loop = ManualClock()

    async def scenario() -> None:
        writes = Writes(seconds, adaptive=True)
        writes.queue(3)
        await turn()
        for _ in range(RECENT):
            writes.queue()
            await turn()
            assert writes.pending == 1  # waiting for more, as the three did
            loop.now += seconds * 1.2  # the window's end has passed
            await turn()
            assert writes.pending == 0
        assert writes.sizes == [3] + [1] * RECENT
        writes.queue()  # the three are forgotten: one thing leaves at once again
        await turn()
        assert writes.sizes == [3] + [1] * (RECENT + 1)

    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


async def test_cancel_drops_the_due_write_and_what_was_counted() -> None:
    writes = Writes(60.0, adaptive=True)
    writes.queue(2)
    writes.drop()
    await turn()
    assert writes.sizes == []
    for n in range(1, 3):  # the two thrown away do not make the next write wait for two
        writes.queue()
        await turn()
        assert writes.sizes == [1] * n
