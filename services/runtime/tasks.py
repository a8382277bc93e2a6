"""A service's background loops: running them on through failures, and stopping them for good."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from services.runtime.logging import get_logger

log = get_logger(__name__)

RECANCEL_S = 0.5  # how long a cancelled task may run on before it is cancelled again
FAILED_STEP_PAUSE_S = 0.5  # how long a loop waits after a failed step (Redis away, say)


async def repeat(
    step: Callable[[], Awaitable[object]],
    pause: float,
    *,
    event: str,
    recover: Callable[[Exception], Awaitable[None]] | None = None,
) -> None:
    """Run `step` for ever, `pause` seconds apart (0: at once again). A failing step does not
    end the loop: `recover` is shown the error first (a consumer group Redis lost is made
    again, say), the failure is logged as `event` with the step's name, and the loop goes on
    after FAILED_STEP_PAUSE_S."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if recover is not None:
                await recover(exc)
            log.warning(
                event,
                loop=getattr(step, "__name__", "?"),
                error=type(exc).__name__,
                detail=str(exc)[:200],
            )
            await asyncio.sleep(FAILED_STEP_PAUSE_S)
            continue
        if pause:
            await asyncio.sleep(pause)


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
