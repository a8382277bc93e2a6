"""`retries.Bounded`: the classifier `on: transient` asks answers in time or has no opinion."""

from __future__ import annotations

import asyncio

from services.pipeline.runs.retries import Bounded, Failure

FAILURE = Failure(run="projects/p/pipelines/q/runs/r1", job="fetch", attempt=1, state="FAILED",
                  reason="EXIT_CODE", exit_code=1, message="step 1: exit status 1")  # fmt: skip


class Hanging:
    """A debugger that never answers."""

    async def is_transient(self, failure: Failure) -> bool:
        await asyncio.Event().wait()
        return True


class Counting:
    """A debugger that says transient, and counts how often it was asked."""

    def __init__(self) -> None:
        self.asked = 0

    async def is_transient(self, failure: Failure) -> bool:
        self.asked += 1
        return True


class Failing:
    async def is_transient(self, failure: Failure) -> bool:
        raise ConnectionError("the debugger is down")


async def test_a_classifier_that_does_not_answer_in_time_has_no_opinion() -> None:
    assert await Bounded(Hanging(), timeout_s=0.05).is_transient(FAILURE) is False


async def test_a_classifier_that_fails_has_no_opinion() -> None:
    assert await Bounded(Failing(), timeout_s=5).is_transient(FAILURE) is False


async def test_an_attempt_is_classified_once_however_often_its_run_is_decided() -> None:
    inner = Counting()
    bounded = Bounded(inner, timeout_s=5)
    assert [await bounded.is_transient(FAILURE) for _ in range(3)] == [True, True, True]
    assert inner.asked == 1
