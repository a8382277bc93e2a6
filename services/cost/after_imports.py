"""What runs after each import commit, in the background: anomaly monitors and budgets look at
the new data. Commits that land while a round runs are covered by one more round."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from services.runtime.logging import get_logger
from services.runtime.tasks import cancel_and_wait

log = get_logger(__name__)


class AfterImports:
    def __init__(self, jobs: Sequence[Callable[[], Awaitable[None]]]) -> None:
        self._jobs = list(jobs)
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0  # rounds completed (tests wait on it)

    def kick(self, _version: int = 0) -> None:
        """A commit landed: run every job (again) soon."""
        self._wanted.set()

    async def _run(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            for job in self._jobs:
                try:
                    await job()
                except Exception as exc:  # one failing job must not stop the others, or the loop
                    log.warning(
                        "cost.after_import.failed",
                        job=getattr(job, "__qualname__", "?"),
                        error=type(exc).__name__,
                    )
            self.rounds += 1

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cost-after-imports")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
