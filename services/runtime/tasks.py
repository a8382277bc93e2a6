"""Stopping a service's background tasks for good."""

from __future__ import annotations

import asyncio
from typing import Any

from services.runtime.logging import get_logger

log = get_logger(__name__)

RECANCEL_S = 0.5  # how long a cancelled task may run on before it is cancelled again


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel `tasks` and return once every one has ended; a task that ended with an error is
    logged, not raised.

    A task that runs on is cancelled again. On Python 3.11 a cancellation can be lost: an
    `asyncio.wait_for` whose inner call completes in the same loop turn returns its result
    instead (fixed in 3.12), and so does library code that catches CancelledError. A
    background loop that lost it would run forever, and so would the drain awaiting it: a test
    teardown hung so on a service's scheduler, its task cancelled but asleep again.
    """
    pending = {task for task in tasks if task is not None}
    while pending := {task for task in pending if not task.done()}:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=RECANCEL_S)
    for ended in tasks:
        if ended is not None and not ended.cancelled() and (error := ended.exception()) is not None:
            log.warning("task.failed", task=ended.get_name(), error=type(error).__name__)
