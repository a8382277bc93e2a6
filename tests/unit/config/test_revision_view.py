"""RevisionView: what a replica may answer CACHED reads from, and when it must ask Redis."""

from __future__ import annotations

import asyncio

from services.config.revision_view import RevisionView


class Counter:
    """The namespace counter in Redis, with reads that can be held in flight."""

    def __init__(self) -> None:
        self.value = 1
        self.reads = 0
        self.gate: asyncio.Event | None = None

    async def read(self, ns: str) -> int:
        self.reads += 1
        value = self.value
        if self.gate is not None:
            await self.gate.wait()
        return value


async def test_a_live_view_answers_from_memory_until_the_namespace_changes() -> None:
    counter = Counter()
    view = RevisionView(counter.read)
    view.subscribed(True)
    assert [await view.revision("ns") for _ in range(3)] == [1, 1, 1]
    assert counter.reads == 1
    counter.value = 2
    view.changed("ns")
    assert await view.revision("ns") == 2
    assert counter.reads == 2


async def test_without_a_subscription_every_read_goes_to_redis() -> None:
    counter = Counter()
    view = RevisionView(counter.read)
    await view.revision("ns")
    await view.revision("ns")
    assert counter.reads == 2
    view.subscribed(True)
    await view.revision("ns")
    view.subscribed(False)
    counter.value = 5
    assert await view.revision("ns") == 5


async def test_a_read_that_raced_with_a_change_is_not_remembered() -> None:
    counter = Counter()
    view = RevisionView(counter.read)
    view.subscribed(True)
    counter.gate = asyncio.Event()
    in_flight = asyncio.create_task(view.revision("ns"))  # reads 1 ...
    await asyncio.sleep(0)  # one loop turn: the read is waiting for Redis
    counter.value = 2
    view.changed("ns")  # ... while revision 2 is committed
    counter.gate.set()
    assert await in_flight == 1
    counter.gate = None
    assert await view.revision("ns") == 2


async def test_a_read_that_began_before_the_subscription_is_not_remembered() -> None:
    counter = Counter()
    view = RevisionView(counter.read)
    counter.gate = asyncio.Event()
    in_flight = asyncio.create_task(view.revision("ns"))
    await asyncio.sleep(0)  # one loop turn: the read is waiting for Redis
    view.subscribed(True)  # changes before this moment were never announced to us
    counter.gate.set()
    await in_flight
    counter.gate = None
    counter.value = 3
    assert await view.revision("ns") == 3
