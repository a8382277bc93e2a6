"""cancel_and_wait stops a background task even when it loses a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from services.runtime.tasks import cancel_and_wait


async def test_a_task_that_lost_its_cancellation_is_cancelled_again() -> None:
    lost = 0

    async def background_loop() -> None:
        nonlocal lost
        try:
            await asyncio.sleep(3600)  # a loop waiting for work, as background loops do
        except asyncio.CancelledError:
            lost += 1  # what a lost cancellation looks like from outside: the loop goes on
        await asyncio.sleep(3600)

    task = asyncio.create_task(background_loop())
    await asyncio.sleep(0)  # one loop turn: the task starts and waits
    async with asyncio.timeout(5):
        await cancel_and_wait(task, None)
    assert task.cancelled() and lost == 1


async def test_a_task_that_failed_is_logged_and_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    async def broken() -> None:
        raise KeyError("boom")

    task = asyncio.create_task(broken(), name="broken-loop")
    await asyncio.sleep(0)  # one loop turn: the task runs and fails
    await cancel_and_wait(task)
    assert isinstance(task.exception(), KeyError)
    assert "task.failed" in capsys.readouterr().out
